import { ascii, checkRange, isPowerOfTwo, safeNumber, view } from "./binary.ts";
import { crc32c } from "./crc32c.ts";
import type { DiskMap, Extent } from "./disk-map.ts";
import { CorruptImageError, UnsupportedImageError } from "./errors.ts";
import type { RangeReader } from "./ports.ts";
import { MAX_VIRTUAL_SIZE } from "./qcow2.ts";

// Layout from Microsoft's VHDX specification v1.0 (little-endian).
const FILE_SIGNATURE = "vhdxfile";
const HEADER_OFFSETS = [64 * 1024, 128 * 1024] as const;
const HEADER_SIZE = 4096;
const HEADER_SIGNATURE = "head";
const OFF_CHECKSUM = 4;
const OFF_SEQUENCE = 8;
const OFF_LOG_GUID = 48;
const OFF_HEADER_VERSION = 66;
const REGION_OFFSETS = [192 * 1024, 256 * 1024] as const;
const REGION_TABLE_SIZE = 64 * 1024;
const REGION_SIGNATURE = "regi";
const OFF_REGION_COUNT = 8;
const REGION_ENTRIES = 16;
const REGION_ENTRY_SIZE = 32;
const MAX_REGION_ENTRIES = 2047;
const METADATA_SIGNATURE = "metadata";
const OFF_METADATA_COUNT = 10;
const METADATA_ENTRIES = 32;
const METADATA_ENTRY_SIZE = 32;
const MAX_METADATA_ENTRIES = 2047;
const METADATA_TABLE_SIZE = 64 * 1024;
const MiB = 1 << 20;
const MIN_BLOCK = MiB;
const MAX_BLOCK = 256 * MiB;
const MAX_BAT_BYTES = 32 * MiB;
const BATCH_BLOCKS = 256;

// Payload block states (bits 0–2 of a BAT entry); everything but FULLY_PRESENT reads as zeros.
const PAYLOAD_FULLY_PRESENT = 6;
const PAYLOAD_PARTIALLY_PRESENT = 7;
const FILE_PARAMS_HAS_PARENT = 2;

const GUID_BAT = "2DC27766-F623-4200-9D64-115E9BFD4A08";
const GUID_METADATA = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const GUID_FILE_PARAMETERS = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B";
const GUID_VIRTUAL_DISK_SIZE = "2FA54224-CD1B-4876-B211-5DBED83BF4B8";
const GUID_LOGICAL_SECTOR_SIZE = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F";

/** GUIDs are stored with their first three fields little-endian. */
function guidAt(bytes: Uint8Array, offset: number): string {
  const h = (i: number) => (bytes[offset + i] ?? 0).toString(16).padStart(2, "0");
  const part = (idx: number[]) => idx.map(h).join("");
  return [part([3, 2, 1, 0]), part([5, 4]), part([7, 6]), part([8, 9]), part([10, 11, 12, 13, 14, 15])]
    .join("-")
    .toUpperCase();
}

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

async function regionTable(
  range: RangeReader,
  signal?: AbortSignal,
): Promise<Map<string, { offset: number; length: number }>> {
  for (const offset of REGION_OFFSETS) {
    const bytes = await range.read(offset, REGION_TABLE_SIZE, signal);
    if (ascii(bytes, 0, 4) !== REGION_SIGNATURE || !checksumOk(bytes)) continue;
    const dv = view(bytes);
    const count = dv.getUint32(OFF_REGION_COUNT, true);
    if (count > MAX_REGION_ENTRIES) throw new CorruptImageError("vhdx region table has too many entries");
    const regions = new Map<string, { offset: number; length: number }>();
    for (let i = 0; i < count; i++) {
      const at = REGION_ENTRIES + i * REGION_ENTRY_SIZE;
      regions.set(guidAt(bytes, at), {
        offset: safeNumber(dv.getBigUint64(at + 16, true), "vhdx region offset"),
        length: dv.getUint32(at + 24, true),
      });
    }
    return regions;
  }
  throw new CorruptImageError("vhdx has no valid region table");
}

/** Opens a fixed or dynamic VHDX. Metadata held: the BAT (8 bytes per block). */
export async function openVhdx(range: RangeReader, signal?: AbortSignal): Promise<DiskMap> {
  const fileSize = range.size;
  checkRange(0, REGION_OFFSETS[1] + REGION_TABLE_SIZE, fileSize, "vhdx headers");
  const ident = await range.read(0, 8, signal);
  if (ascii(ident, 0, 8) !== FILE_SIGNATURE) throw new CorruptImageError("not a vhdx image (bad signature)");
  const header = await currentHeader(range, signal);
  if (view(header).getUint16(OFF_HEADER_VERSION, true) !== 1)
    throw new UnsupportedImageError("vhdx version is not 1");
  if (header.subarray(OFF_LOG_GUID, OFF_LOG_GUID + 16).some((b) => b !== 0)) {
    throw new UnsupportedImageError(
      "vhdx has a pending log (not closed cleanly); replay it with Hyper-V or qemu-img check -r all",
    );
  }
  const regions = await regionTable(range, signal);
  const bat = regions.get(GUID_BAT);
  const meta = regions.get(GUID_METADATA);
  if (!bat || !meta) throw new CorruptImageError("vhdx lacks its BAT or metadata region");
  // QEMU puts the BAT before the metadata region: read it first so a forward-only source still works.
  if (bat.length > MAX_BAT_BYTES) throw new UnsupportedImageError("vhdx BAT region is too large");
  checkRange(bat.offset, bat.length, fileSize, "vhdx BAT region");
  const early = bat.offset < meta.offset ? await range.read(bat.offset, bat.length, signal) : undefined;
  checkRange(meta.offset, METADATA_TABLE_SIZE, fileSize, "vhdx metadata region");
  const metaTable = await range.read(meta.offset, METADATA_TABLE_SIZE, signal);
  if (ascii(metaTable, 0, 8) !== METADATA_SIGNATURE)
    throw new CorruptImageError("vhdx metadata table has a bad signature");
  const mdv = view(metaTable);
  const count = mdv.getUint16(OFF_METADATA_COUNT, true);
  if (count > MAX_METADATA_ENTRIES) throw new CorruptImageError("vhdx metadata table has too many entries");
  const items = new Map<string, Uint8Array>();
  for (let i = 0; i < count; i++) {
    const at = METADATA_ENTRIES + i * METADATA_ENTRY_SIZE;
    const itemOffset = mdv.getUint32(at + 16, true);
    const itemLength = mdv.getUint32(at + 20, true);
    if (itemLength > 64) continue; // only small fixed-size items are read here
    checkRange(itemOffset, itemLength, meta.length, "vhdx metadata item");
    items.set(guidAt(metaTable, at), await range.read(meta.offset + itemOffset, itemLength, signal));
  }
  const item = (guid: string, length: number, what: string) => {
    const bytes = items.get(guid);
    if (!bytes || bytes.length < length) throw new CorruptImageError(`vhdx metadata lacks ${what}`);
    return view(bytes);
  };
  const params = item(GUID_FILE_PARAMETERS, 8, "file parameters");
  const blockSize = params.getUint32(0, true);
  if (params.getUint32(4, true) & FILE_PARAMS_HAS_PARENT)
    throw new UnsupportedImageError("differencing vhdx images are not accepted");
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK || blockSize > MAX_BLOCK) {
    throw new CorruptImageError(`vhdx block size ${blockSize} is invalid`);
  }
  const virtualSize = safeNumber(
    item(GUID_VIRTUAL_DISK_SIZE, 8, "virtual disk size").getBigUint64(0, true),
    "vhdx virtual size",
  );
  if (virtualSize > MAX_VIRTUAL_SIZE)
    throw new UnsupportedImageError(`vhdx virtual size ${virtualSize} is too large`);
  const sectorSize = item(GUID_LOGICAL_SECTOR_SIZE, 4, "logical sector size").getUint32(0, true);
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

  async function* batches(sig?: AbortSignal): AsyncGenerator<Extent[]> {
    const table = view(early ?? (await range.read(batOffset, batEntries * 8, sig)));
    for (let first = 0; first < blocks; first += BATCH_BLOCKS) {
      const out: Extent[] = [];
      for (let i = first; i < Math.min(blocks, first + BATCH_BLOCKS); i++) {
        const length = Math.min(blockSize, virtualSize - i * blockSize);
        const at = (i + Math.floor(i / chunkRatio)) * 8;
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

  return { format: "vhdx", virtualSize, batches };
}
