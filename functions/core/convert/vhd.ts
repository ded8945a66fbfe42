import { hasBytesAt } from "../formats/bytes.ts";
import {
  parseVhdDynamicHeader,
  parseVhdFooter,
  VHD_DISK_TYPE,
  VHD_DYNAMIC_HEADER_SIZE,
  VHD_FOOTER_COOKIE,
  VHD_FOOTER_SIZE,
  vhdVirtualSize,
} from "../formats/vhd.ts";
import { checkRange, isPowerOfTwo, safeNumber, view } from "./binary.ts";
import { type DiskMap, type Extent, entrySpan } from "./disk-map.ts";
import { CorruptImageError, NeedsRangedReads, UnsupportedImageError } from "./errors.ts";
import type { RangeReader } from "./ports.ts";
import { MAX_VIRTUAL_SIZE } from "./qcow2.ts";

// Footer and dynamic header are parsed by the inspector's module (including QEMU's virtual size
// rule: CHS geometry unless the creator app records current_size); this file walks the BAT.
const FOOTER_SIZE = VHD_FOOTER_SIZE;
const BAT_UNUSED = 0xffffffff;
const SECTOR = 512;
// A block and its bitmap are decoded in one piece: this caps that piece (QEMU and Hyper-V write 2 MiB).
const MAX_BLOCK_SIZE = 16 << 20;
const MAX_BAT_BYTES = 32 << 20;
const BATCH_BLOCKS = 256;

const isFooter = (bytes: Uint8Array) =>
  bytes.length >= FOOTER_SIZE && hasBytesAt(bytes, 0, VHD_FOOTER_COOKIE);

/** Opens a fixed or dynamic VHD. Dynamic: the BAT is held (4 bytes per block); sector bitmaps are honoured. */
export async function openVhd(range: RangeReader, signal?: AbortSignal): Promise<DiskMap> {
  // Dynamic disks keep a copy of the footer at offset 0; fixed disks only at the end.
  let footer = await range.read(0, Math.min(FOOTER_SIZE, range.size), signal);
  let fixedTail = false;
  if (!isFooter(footer)) {
    if (!Number.isFinite(range.size)) {
      throw new NeedsRangedReads("a fixed vhd keeps its footer at the end of the stream");
    }
    if (range.size < FOOTER_SIZE) {
      throw new UnsupportedImageError(
        "a fixed vhd keeps its footer at the end, which this source cannot reach",
      );
    }
    footer = await range.read(range.size - FOOTER_SIZE, FOOTER_SIZE, signal);
    if (!isFooter(footer)) throw new CorruptImageError("not a vhd image (no footer)");
    fixedTail = true;
  }
  const parsed = parseVhdFooter(footer);
  const type = parsed.diskType;
  const virtualSize = safeNumber(vhdVirtualSize(parsed), "vhd virtual size");
  if (virtualSize > MAX_VIRTUAL_SIZE)
    throw new UnsupportedImageError(`vhd virtual size ${virtualSize} is too large`);
  if (type === VHD_DISK_TYPE.differencing)
    throw new UnsupportedImageError("differencing vhd images are not accepted");
  if (type === VHD_DISK_TYPE.fixed) {
    if (!fixedTail) throw new CorruptImageError("fixed vhd with a footer at offset 0");
    checkRange(0, virtualSize, range.size - FOOTER_SIZE, "vhd fixed data");
    return {
      format: "vhd",
      virtualSize,
      // Seeks to any byte, like raw.
      seekUnit: 1,
      async *batches(_signal?: AbortSignal, from = 0, to = virtualSize) {
        const at = Math.max(0, from);
        const end = Math.min(virtualSize, to);
        if (at < end) yield [{ kind: "data", host: at, length: end - at }];
      },
    };
  }
  if (type !== VHD_DISK_TYPE.dynamic)
    throw new UnsupportedImageError(`vhd disk type ${type} is not supported`);

  const dynOffset = safeNumber(parsed.dataOffset, "vhd data offset");
  checkRange(dynOffset, VHD_DYNAMIC_HEADER_SIZE, range.size, "vhd dynamic header");
  const dyn = parseVhdDynamicHeader(await range.read(dynOffset, VHD_DYNAMIC_HEADER_SIZE, signal));
  const batOffset = safeNumber(dyn.tableOffset, "vhd table offset");
  const maxEntries = dyn.maxTableEntries;
  const blockSize = dyn.blockSize;
  if (!isPowerOfTwo(blockSize) || blockSize < SECTOR || blockSize > MAX_BLOCK_SIZE) {
    throw new UnsupportedImageError(`vhd block size ${blockSize} is not supported (at most 16 MiB)`);
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

  // Seeks by block: a walk of `[from, to)` reads only the BAT entries of the blocks it covers.
  async function* batches(sig?: AbortSignal, from?: number, to?: number): AsyncGenerator<Extent[]> {
    const { first: start, end } = entrySpan(from, to, blockSize, blocks);
    if (start === end) return;
    const bat = view(await range.read(batOffset + start * 4, (end - start) * 4, sig));
    for (let first = start; first < end; first += BATCH_BLOCKS) {
      const out: Extent[] = [];
      for (let i = first; i < Math.min(end, first + BATCH_BLOCKS); i++) {
        const length = Math.min(blockSize, virtualSize - i * blockSize);
        const sector = bat.getUint32((i - start) * 4);
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

  return { format: "vhd", virtualSize, seekUnit: blockSize, batches };
}
