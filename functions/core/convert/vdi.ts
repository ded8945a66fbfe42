import { parseVdiHeader, VDI_HEADER_SIZE, VDI_IMAGE_TYPE } from "../formats/vdi.ts";
import { checkRange, safeNumber, view } from "./binary.ts";
import { type DiskMap, type Extent, entrySpan } from "./disk-map.ts";
import { CorruptImageError, UnsupportedImageError } from "./errors.ts";
import type { RangeReader } from "./ports.ts";
import { MAX_VIRTUAL_SIZE } from "./qcow2.ts";

// The header is parsed by the inspector's module (QEMU's limits: 1 MiB blocks, 512-byte sectors, no
// block extra data); this file walks the block map.
// Block map entries at or above this mean "not allocated" (0xffffffff) or "discarded, reads as zero".
const FIRST_UNMAPPED = 0xfffffffe;
const MAX_BMAP_BYTES = 32 << 20;
const BATCH_BLOCKS = 512;

/** Opens a dynamic or fixed VDI image. Metadata held: the block map (4 bytes per block). */
export async function openVdi(range: RangeReader, signal?: AbortSignal): Promise<DiskMap> {
  const h = parseVdiHeader(await range.read(0, Math.min(VDI_HEADER_SIZE, range.size), signal));
  if (h.imageType !== VDI_IMAGE_TYPE.dynamic && h.imageType !== VDI_IMAGE_TYPE.static) {
    throw new UnsupportedImageError(`vdi image type ${h.imageType} (undo or differencing) is not supported`);
  }
  if (h.hasParent) throw new UnsupportedImageError("differencing vdi images are not accepted");
  const virtualSize = safeNumber(h.diskSize, "vdi disk size");
  if (virtualSize > MAX_VIRTUAL_SIZE)
    throw new UnsupportedImageError(`vdi virtual size ${virtualSize} is too large`);
  const { blockSize, offsetBmap: bmapOffset, offsetData: dataOffset, blocksInImage: blocks } = h;
  const needed = Math.ceil(virtualSize / blockSize);
  if (needed * 4 > MAX_BMAP_BYTES) throw new UnsupportedImageError("vdi block map is too large");
  checkRange(bmapOffset, needed * 4, range.size, "vdi block map");
  const fileSize = range.size;

  // Seeks by block: a walk of `[from, to)` reads only the block map entries of the blocks it covers.
  async function* batches(sig?: AbortSignal, from?: number, to?: number): AsyncGenerator<Extent[]> {
    const { first: start, end } = entrySpan(from, to, blockSize, needed);
    if (start === end) return;
    const bmap = view(await range.read(bmapOffset + start * 4, (end - start) * 4, sig));
    for (let first = start; first < end; first += BATCH_BLOCKS) {
      const out: Extent[] = [];
      for (let i = first; i < Math.min(end, first + BATCH_BLOCKS); i++) {
        const length = Math.min(blockSize, virtualSize - i * blockSize);
        const entry = bmap.getUint32((i - start) * 4, true);
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

  return { format: "vdi", virtualSize, seekUnit: blockSize, batches };
}
