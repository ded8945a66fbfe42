import { ascii, checkRange, isPowerOfTwo, safeNumber, view } from "./binary.ts";
import type { DiskMap, Extent } from "./disk-map.ts";
import { CorruptImageError, UnsupportedImageError } from "./errors.ts";
import type { RangeReader } from "./ports.ts";
import { MAX_VIRTUAL_SIZE } from "./qcow2.ts";

// Offsets of the VHD footer and dynamic disk header (Microsoft VHD spec, big-endian).
const FOOTER_SIZE = 512;
const FOOTER_COOKIE = "conectix";
const OFF_DATA_OFFSET = 16;
const OFF_CREATOR_APP = 28;
const OFF_CURRENT_SIZE = 48;
const OFF_GEOMETRY_CYLINDERS = 56;
const OFF_GEOMETRY_HEADS = 58;
const OFF_GEOMETRY_SECTORS = 59;
const OFF_DISK_TYPE = 60;
const DISK_FIXED = 2;
const DISK_DYNAMIC = 3;
const DISK_DIFFERENCING = 4;

const DYN_HEADER_SIZE = 1024;
const DYN_COOKIE = "cxsparse";
const OFF_TABLE_OFFSET = 16;
const OFF_MAX_TABLE_ENTRIES = 28;
const OFF_BLOCK_SIZE = 32;
const BAT_UNUSED = 0xffffffff;
const SECTOR = 512;
const MAX_BLOCK_SIZE = 256 << 20;
const MAX_BAT_BYTES = 32 << 20;
const BATCH_BLOCKS = 256;
// The largest CHS geometry: an image of this geometry must use current_size (QEMU's VHD_MAX_GEOMETRY).
const MAX_GEOMETRY_SECTORS = 65535 * 16 * 255;
// Creator apps whose images record their true size in current_size rather than CHS geometry.
const CURRENT_SIZE_CREATORS = ["win ", "qem2", "d2v ", "CTXS", "tap\0"];

/**
 * The guest size the way QEMU computes it: Virtual PC and old QEMU size disks by CHS geometry,
 * Hyper-V and others by current_size. Following QEMU keeps our output identical to qemu-img's.
 */
export function vhdVirtualSize(footer: Uint8Array): number {
  const dv = view(footer);
  const chs =
    dv.getUint16(OFF_GEOMETRY_CYLINDERS) *
    dv.getUint8(OFF_GEOMETRY_HEADS) *
    dv.getUint8(OFF_GEOMETRY_SECTORS);
  const creator = ascii(footer, OFF_CREATOR_APP, 4);
  const current = safeNumber(dv.getBigUint64(OFF_CURRENT_SIZE), "vhd current size");
  if (CURRENT_SIZE_CREATORS.includes(creator) || chs === MAX_GEOMETRY_SECTORS)
    return current - (current % SECTOR);
  return chs * SECTOR;
}

/** Opens a fixed or dynamic VHD. Dynamic: the BAT is held (4 bytes per block); sector bitmaps are honoured. */
export async function openVhd(range: RangeReader, signal?: AbortSignal): Promise<DiskMap> {
  // Dynamic disks keep a copy of the footer at offset 0; fixed disks only at the end.
  let footer = await range.read(0, Math.min(FOOTER_SIZE, range.size), signal);
  let fixedTail = false;
  if (ascii(footer, 0, 8) !== FOOTER_COOKIE) {
    if (!Number.isFinite(range.size) || range.size < FOOTER_SIZE) {
      throw new UnsupportedImageError(
        "a fixed vhd keeps its footer at the end, which this source cannot reach",
      );
    }
    footer = await range.read(range.size - FOOTER_SIZE, FOOTER_SIZE, signal);
    if (ascii(footer, 0, 8) !== FOOTER_COOKIE) throw new CorruptImageError("not a vhd image (no footer)");
    fixedTail = true;
  }
  if (footer.length < FOOTER_SIZE) throw new CorruptImageError("vhd footer is truncated");
  const dv = view(footer);
  const type = dv.getUint32(OFF_DISK_TYPE);
  const virtualSize = vhdVirtualSize(footer);
  if (virtualSize > MAX_VIRTUAL_SIZE)
    throw new UnsupportedImageError(`vhd virtual size ${virtualSize} is too large`);
  if (type === DISK_DIFFERENCING) throw new UnsupportedImageError("differencing vhd images are not accepted");
  if (type === DISK_FIXED) {
    if (!fixedTail) throw new CorruptImageError("fixed vhd with a footer at offset 0");
    checkRange(0, virtualSize, range.size - FOOTER_SIZE, "vhd fixed data");
    return {
      format: "vhd",
      virtualSize,
      async *batches() {
        yield [{ kind: "data", host: 0, length: virtualSize }];
      },
    };
  }
  if (type !== DISK_DYNAMIC) throw new UnsupportedImageError(`vhd disk type ${type} is not supported`);

  const dynOffset = safeNumber(dv.getBigUint64(OFF_DATA_OFFSET), "vhd data offset");
  checkRange(dynOffset, DYN_HEADER_SIZE, range.size, "vhd dynamic header");
  const dyn = await range.read(dynOffset, DYN_HEADER_SIZE, signal);
  if (ascii(dyn, 0, 8) !== DYN_COOKIE) throw new CorruptImageError("vhd dynamic header has a bad cookie");
  const ddv = view(dyn);
  const batOffset = safeNumber(ddv.getBigUint64(OFF_TABLE_OFFSET), "vhd table offset");
  const maxEntries = ddv.getUint32(OFF_MAX_TABLE_ENTRIES);
  const blockSize = ddv.getUint32(OFF_BLOCK_SIZE);
  if (!isPowerOfTwo(blockSize) || blockSize < SECTOR || blockSize > MAX_BLOCK_SIZE) {
    throw new CorruptImageError(`vhd block size ${blockSize} is invalid`);
  }
  const blocks = Math.ceil(virtualSize / blockSize);
  if (blocks > maxEntries)
    throw new CorruptImageError(`vhd BAT has ${maxEntries} entries, the disk needs ${blocks}`);
  if (blocks * 4 > MAX_BAT_BYTES) throw new UnsupportedImageError("vhd block allocation table is too large");
  checkRange(batOffset, blocks * 4, range.size, "vhd block allocation table");
  // Each block starts with a sector bitmap (one bit per sector, padded to whole sectors).
  const bitmapSize = Math.ceil(blockSize / SECTOR / 8 / SECTOR) * SECTOR;
  const fileSize = range.size;

  const applyBitmap = (length: number) => (stored: Uint8Array) => {
    const data = stored.subarray(bitmapSize, bitmapSize + length);
    const sectors = Math.ceil(length / SECTOR);
    let full = true;
    for (let s = 0; s < sectors && full; s += 8) {
      const byte = stored[s >> 3] ?? 0;
      const want = sectors - s >= 8 ? 0xff : (0xff00 >> (sectors - s)) & 0xff;
      full = (byte & want) === want;
    }
    if (full) return data;
    // Sectors whose bit is clear were never written: they read as zeros.
    const out = new Uint8Array(length);
    for (let s = 0; s < sectors; s++) {
      if (((stored[s >> 3] ?? 0) >> (7 - (s & 7))) & 1) {
        out.set(data.subarray(s * SECTOR, Math.min(length, (s + 1) * SECTOR)), s * SECTOR);
      }
    }
    return out;
  };

  async function* batches(sig?: AbortSignal): AsyncGenerator<Extent[]> {
    const bat = view(await range.read(batOffset, blocks * 4, sig));
    for (let first = 0; first < blocks; first += BATCH_BLOCKS) {
      const out: Extent[] = [];
      for (let i = first; i < Math.min(blocks, first + BATCH_BLOCKS); i++) {
        const length = Math.min(blockSize, virtualSize - i * blockSize);
        const sector = bat.getUint32(i * 4);
        if (sector === BAT_UNUSED) {
          out.push({ kind: "zero", length });
          continue;
        }
        const host = sector * SECTOR;
        checkRange(host, bitmapSize + length, fileSize, `vhd block ${i}`);
        out.push({
          kind: "encoded",
          length,
          host,
          hostLength: bitmapSize + length,
          decode: applyBitmap(length),
        });
      }
      yield out;
    }
  }

  return { format: "vhd", virtualSize, batches };
}
