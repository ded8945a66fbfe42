import { checkRange, isPowerOfTwo, safeNumber, view } from "./binary.ts";
import type { DiskMap, Extent } from "./disk-map.ts";
import { CorruptImageError, UnsupportedImageError } from "./errors.ts";
import type { RangeReader } from "./ports.ts";
import { MAX_VIRTUAL_SIZE } from "./qcow2.ts";

// Offsets of VirtualBox's VDI header v1.1 (little-endian), as QEMU's vdi.c reads it.
export const VDI_SIGNATURE = 0xbeda107f;
const OFF_SIGNATURE = 64;
const OFF_VERSION = 68;
const OFF_IMAGE_TYPE = 76;
const OFF_OFFSET_BMAP = 340;
const OFF_OFFSET_DATA = 344;
const OFF_SECTOR_SIZE = 360;
const OFF_DISK_SIZE = 368;
const OFF_BLOCK_SIZE = 376;
const OFF_BLOCK_EXTRA = 380;
const OFF_BLOCKS_IN_IMAGE = 384;
const HEADER_READ = 512;
const VERSION_1_1 = 0x00010001;
const TYPE_DYNAMIC = 1;
const TYPE_FIXED = 2;
// Block map entries at or above this mean "not allocated" (0xffffffff) or "discarded, reads as zero".
const FIRST_UNMAPPED = 0xfffffffe;
const MAX_BLOCK_SIZE = 64 << 20;
const MAX_BMAP_BYTES = 32 << 20;
const BATCH_BLOCKS = 512;

/** Opens a dynamic or fixed VDI image. Metadata held: the block map (4 bytes per block). */
export async function openVdi(range: RangeReader, signal?: AbortSignal): Promise<DiskMap> {
  const head = await range.read(0, Math.min(HEADER_READ, range.size), signal);
  if (head.length < HEADER_READ) throw new CorruptImageError("vdi header is truncated");
  const dv = view(head);
  if (dv.getUint32(OFF_SIGNATURE, true) !== VDI_SIGNATURE)
    throw new CorruptImageError("not a vdi image (bad signature)");
  if (dv.getUint32(OFF_VERSION, true) !== VERSION_1_1)
    throw new UnsupportedImageError("only vdi version 1.1 is supported");
  const type = dv.getUint32(OFF_IMAGE_TYPE, true);
  if (type !== TYPE_DYNAMIC && type !== TYPE_FIXED) {
    throw new UnsupportedImageError(`vdi image type ${type} (undo or differencing) is not supported`);
  }
  if (dv.getUint32(OFF_SECTOR_SIZE, true) !== 512) throw new CorruptImageError("vdi sector size is not 512");
  const bmapOffset = dv.getUint32(OFF_OFFSET_BMAP, true);
  const dataOffset = dv.getUint32(OFF_OFFSET_DATA, true);
  const virtualSize = safeNumber(dv.getBigUint64(OFF_DISK_SIZE, true), "vdi disk size");
  if (virtualSize > MAX_VIRTUAL_SIZE)
    throw new UnsupportedImageError(`vdi virtual size ${virtualSize} is too large`);
  const blockSize = dv.getUint32(OFF_BLOCK_SIZE, true);
  if (!isPowerOfTwo(blockSize) || blockSize < 512 || blockSize > MAX_BLOCK_SIZE) {
    throw new CorruptImageError(`vdi block size ${blockSize} is invalid`);
  }
  if (dv.getUint32(OFF_BLOCK_EXTRA, true) !== 0)
    throw new UnsupportedImageError("vdi images with block extra data are not supported");
  const blocks = dv.getUint32(OFF_BLOCKS_IN_IMAGE, true);
  const needed = Math.ceil(virtualSize / blockSize);
  if (blocks < needed) throw new CorruptImageError(`vdi has ${blocks} blocks but its size needs ${needed}`);
  if (needed * 4 > MAX_BMAP_BYTES) throw new UnsupportedImageError("vdi block map is too large");
  checkRange(bmapOffset, needed * 4, range.size, "vdi block map");
  const fileSize = range.size;

  async function* batches(sig?: AbortSignal): AsyncGenerator<Extent[]> {
    const bmap = view(await range.read(bmapOffset, needed * 4, sig));
    for (let first = 0; first < needed; first += BATCH_BLOCKS) {
      const out: Extent[] = [];
      for (let i = first; i < Math.min(needed, first + BATCH_BLOCKS); i++) {
        const length = Math.min(blockSize, virtualSize - i * blockSize);
        const entry = bmap.getUint32(i * 4, true);
        if (entry >= FIRST_UNMAPPED) {
          out.push({ kind: "zero", length });
          continue;
        }
        if (entry >= blocks)
          throw new CorruptImageError(`vdi block map entry ${i} points past the last block`);
        const host = dataOffset + entry * blockSize;
        checkRange(host, length, fileSize, `vdi block ${i}`);
        out.push({ kind: "data", length, host });
      }
      yield out;
    }
  }

  return { format: "vdi", virtualSize, batches };
}
