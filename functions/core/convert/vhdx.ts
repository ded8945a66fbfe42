import { hasBytesAt } from "../formats/bytes.ts";
import {
  parseVhdxMetadataTable,
  parseVhdxRegionTable,
  VHDX_FILE_PARAMS_HAS_PARENT,
  VHDX_FILE_SIGNATURE,
  VHDX_GUID,
  VHDX_MAX_BLOCK_SIZE,
  VHDX_METADATA_TABLE_SIZE,
  VHDX_MIN_BLOCK_SIZE,
  VHDX_REGION_SIGNATURE,
  VHDX_REGION_TABLE_OFFSET,
  VHDX_REGION_TABLE_SIZE,
  type VhdxRegion,
} from "../formats/vhdx.ts";
import { ascii, checkRange, isPowerOfTwo, safeNumber, view } from "./binary.ts";
import { crc32c } from "./crc32c.ts";
import { type DiskMap, type Extent, entrySpan } from "./disk-map.ts";
import { CorruptImageError, UnsupportedImageError } from "./errors.ts";
import type { RangeReader } from "./ports.ts";
import { MAX_VIRTUAL_SIZE } from "./qcow2.ts";

// Region and metadata tables are parsed by the inspector's module; this file adds the header and
// region-table checksums, the refusals and the BAT walk (Microsoft VHDX specification v1.0, little-endian).
const HEADER_OFFSETS = [64 * 1024, 128 * 1024] as const;
const HEADER_SIZE = 4096;
const HEADER_SIGNATURE = "head";
const OFF_CHECKSUM = 4;
const OFF_SEQUENCE = 8;
const OFF_LOG_GUID = 48;
const OFF_HEADER_VERSION = 66;
const REGION_OFFSETS = [VHDX_REGION_TABLE_OFFSET, 256 * 1024] as const;
const MiB = 1 << 20;
const MAX_BAT_BYTES = 32 * MiB;
const BATCH_BLOCKS = 256;

// Payload block states (bits 0–2 of a BAT entry); everything but FULLY_PRESENT reads as zeros.
const PAYLOAD_FULLY_PRESENT = 6;
const PAYLOAD_PARTIALLY_PRESENT = 7;

const sameGuid = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i]);

function checksumOk(bytes: Uint8Array): boolean {
  // A real copy: `slice` on a Node Buffer would be a view, and zeroing its checksum would alter the source.
  const copy = new Uint8Array(bytes);
  const stored = view(copy).getUint32(OFF_CHECKSUM, true);
  view(copy).setUint32(OFF_CHECKSUM, 0, true);
  return crc32c(copy) === stored;
}

async function currentHeader(range: RangeReader, signal?: AbortSignal): Promise<Uint8Array> {
  let best: { bytes: Uint8Array; seq: bigint } | undefined;
  for (const offset of HEADER_OFFSETS) {
    const bytes = await range.read(offset, HEADER_SIZE, signal);
    if (ascii(bytes, 0, 4) !== HEADER_SIGNATURE || !checksumOk(bytes)) continue;
    const seq = view(bytes).getBigUint64(OFF_SEQUENCE, true);
    if (!best || seq > best.seq) best = { bytes, seq };
  }
  if (!best) throw new CorruptImageError("vhdx has no valid header");
  return best.bytes;
}

async function regionTable(range: RangeReader, signal?: AbortSignal): Promise<VhdxRegion[]> {
  for (const offset of REGION_OFFSETS) {
    const bytes = await range.read(offset, VHDX_REGION_TABLE_SIZE, signal);
    if (!hasBytesAt(bytes, 0, VHDX_REGION_SIGNATURE) || !checksumOk(bytes)) continue;
    return parseVhdxRegionTable(bytes);
  }
  throw new CorruptImageError("vhdx has no valid region table");
}

function region(regions: VhdxRegion[], guid: Uint8Array, what: string): { offset: number; length: number } {
  const found = regions.filter((r) => sameGuid(r.guid, guid));
  if (found.length !== 1 || !found[0]) throw new CorruptImageError(`vhdx needs exactly one ${what} region`);
  return { offset: safeNumber(found[0].fileOffset, `vhdx ${what} region offset`), length: found[0].length };
}

/** Opens a fixed or dynamic VHDX. Metadata held: the BAT (8 bytes per block). */
export async function openVhdx(range: RangeReader, signal?: AbortSignal): Promise<DiskMap> {
  const fileSize = range.size;
  checkRange(0, REGION_OFFSETS[1] + VHDX_REGION_TABLE_SIZE, fileSize, "vhdx headers");
  const ident = await range.read(0, 8, signal);
  if (!hasBytesAt(ident, 0, VHDX_FILE_SIGNATURE))
    throw new CorruptImageError("not a vhdx image (bad signature)");
  const header = await currentHeader(range, signal);
  if (view(header).getUint16(OFF_HEADER_VERSION, true) !== 1)
    throw new UnsupportedImageError("vhdx version is not 1");
  if (header.subarray(OFF_LOG_GUID, OFF_LOG_GUID + 16).some((b) => b !== 0)) {
    throw new UnsupportedImageError(
      "vhdx has a pending log (not closed cleanly); replay it with Hyper-V or qemu-img check -r all",
    );
  }
  const regions = await regionTable(range, signal);
  const bat = region(regions, VHDX_GUID.batRegion, "BAT");
  const meta = region(regions, VHDX_GUID.metadataRegion, "metadata");
  // QEMU puts the BAT before the metadata region: read it first so a forward-only source still works.
  if (bat.length > MAX_BAT_BYTES) throw new UnsupportedImageError("vhdx BAT region is too large");
  checkRange(bat.offset, bat.length, fileSize, "vhdx BAT region");
  const early = bat.offset < meta.offset ? await range.read(bat.offset, bat.length, signal) : undefined;
  checkRange(meta.offset, VHDX_METADATA_TABLE_SIZE, fileSize, "vhdx metadata region");
  const entries = parseVhdxMetadataTable(await range.read(meta.offset, VHDX_METADATA_TABLE_SIZE, signal));
  const wanted = [VHDX_GUID.fileParameters, VHDX_GUID.virtualDiskSize, VHDX_GUID.logicalSectorSize];
  const items = new Map<Uint8Array, Uint8Array>();
  for (const entry of entries) {
    const guid = wanted.find((g) => sameGuid(g, entry.guid));
    // Only the small fixed-size items conversion needs are read.
    if (!guid || entry.length > 64) continue;
    checkRange(entry.offset, entry.length, meta.length, "vhdx metadata item");
    items.set(guid, await range.read(meta.offset + entry.offset, entry.length, signal));
  }
  const item = (guid: Uint8Array, length: number, what: string) => {
    const bytes = items.get(guid);
    if (!bytes || bytes.length < length) throw new CorruptImageError(`vhdx metadata lacks ${what}`);
    return view(bytes);
  };
  const params = item(VHDX_GUID.fileParameters, 8, "file parameters");
  const blockSize = params.getUint32(0, true);
  if (params.getUint32(4, true) & VHDX_FILE_PARAMS_HAS_PARENT)
    throw new UnsupportedImageError("differencing vhdx images are not accepted");
  if (!isPowerOfTwo(blockSize) || blockSize < VHDX_MIN_BLOCK_SIZE || blockSize > VHDX_MAX_BLOCK_SIZE) {
    throw new CorruptImageError(`vhdx block size ${blockSize} is invalid`);
  }
  const virtualSize = safeNumber(
    item(VHDX_GUID.virtualDiskSize, 8, "virtual disk size").getBigUint64(0, true),
    "vhdx virtual size",
  );
  if (virtualSize > MAX_VIRTUAL_SIZE)
    throw new UnsupportedImageError(`vhdx virtual size ${virtualSize} is too large`);
  const sectorSize = item(VHDX_GUID.logicalSectorSize, 4, "logical sector size").getUint32(0, true);
  if (sectorSize !== 512 && sectorSize !== 4096)
    throw new CorruptImageError(`vhdx logical sector size ${sectorSize} is invalid`);
  // One sector-bitmap entry follows every `chunkRatio` payload entries in the BAT.
  const chunkRatio = (2 ** 23 * sectorSize) / blockSize;
  const blocks = Math.ceil(virtualSize / blockSize);
  const batEntries = blocks === 0 ? 0 : blocks + Math.floor((blocks - 1) / chunkRatio);
  if (batEntries * 8 > MAX_BAT_BYTES) throw new UnsupportedImageError("vhdx BAT is too large");
  if (batEntries * 8 > bat.length) throw new CorruptImageError("vhdx BAT region is too small for the disk");
  const batOffset = bat.offset;
  checkRange(batOffset, batEntries * 8, fileSize, "vhdx BAT");

  /** Byte offset in the BAT of payload block `i`'s entry (a sector-bitmap entry follows every chunk). */
  const entryAt = (i: number) => (i + Math.floor(i / chunkRatio)) * 8;

  // Seeks by block: a walk of `[from, to)` reads only the BAT entries of the blocks it covers (unless
  // the whole BAT was read when the image was opened, as it is when it precedes the metadata region).
  async function* batches(sig?: AbortSignal, from?: number, to?: number): AsyncGenerator<Extent[]> {
    const { first: start, end } = entrySpan(from, to, blockSize, blocks);
    if (start === end) return;
    const base = early ? 0 : entryAt(start);
    const table = view(early ?? (await range.read(batOffset + base, entryAt(end - 1) + 8 - base, sig)));
    for (let first = start; first < end; first += BATCH_BLOCKS) {
      const out: Extent[] = [];
      for (let i = first; i < Math.min(end, first + BATCH_BLOCKS); i++) {
        const length = Math.min(blockSize, virtualSize - i * blockSize);
        const at = entryAt(i) - base;
        const lo = table.getUint32(at, true);
        const hi = table.getUint32(at + 4, true);
        const state = lo & 7;
        if (state === PAYLOAD_PARTIALLY_PRESENT)
          throw new UnsupportedImageError("vhdx block is partially present (differencing)");
        if (state !== PAYLOAD_FULLY_PRESENT) {
          out.push({ kind: "zero", length });
          continue;
        }
        // FileOffsetMB is bits 20–63: (hi << 12) | (lo >>> 20), in MiB.
        const host = (hi * 2 ** 12 + (lo >>> 20)) * MiB;
        checkRange(host, length, fileSize, `vhdx payload block ${i}`);
        out.push({ kind: "data", length, host });
      }
      yield out;
    }
  }

  return { format: "vhdx", virtualSize, seekUnit: blockSize, batches };
}
