import { promisify } from "node:util";
import { inflate } from "node:zlib";
import {
  looksLikeVmdkDescriptor,
  parseVmdkSparseHeader,
  VMDK_GD_AT_END,
  VMDK_HEADER_SIZE,
  VMDK_OFFSET,
} from "../formats/vmdk.ts";
import { checkRange, isPowerOfTwo, safeNumber, view } from "./binary.ts";
import { type DiskMap, type Extent, ExtentRuns, entrySpan } from "./disk-map.ts";
import { CorruptImageError, NeedsRangedReads, UnsupportedImageError } from "./errors.ts";
import type { RangeReader } from "./ports.ts";
import { MAX_VIRTUAL_SIZE } from "./qcow2.ts";

const inflateAsync = promisify(inflate);

// The sparse header is parsed by the inspector's module; this file reads the grain directory and
// tables (VMware "Virtual Disk Format 1.1", little-endian) and decodes stream grains.
const FOOTER_FROM_END = 1024; // footer marker, footer, end-of-stream marker: the footer is 2 sectors from the end
const FLAG_ZERO_GRAIN_GTE = 1 << 2;
const FLAG_COMPRESSED = 1 << 16;
const FLAG_MARKERS = 1 << 17;
const COMPRESSION_DEFLATE = 1;
const GTE_ZEROED = 1;
const MARKER_HEADER = 12; // u64 lba + u32 size
const SECTOR = 512;
// QEMU allows grains up to 1 GiB; a grain is decoded in one piece, so conversion stops at 1 MiB
// (VMware and qemu-img write 64 KiB).
const MAX_GRAIN_SECTORS = 2048;
/** Largest grain directory read at once; bounds metadata memory. */
const MAX_GD_BYTES = 32 << 20;

interface VmdkHeader {
  flags: number;
  capacity: number;
  grainSectors: number;
  gtesPerGt: number;
  gdSector: bigint;
}

function parseHeader(bytes: Uint8Array): VmdkHeader {
  if (looksLikeVmdkDescriptor(bytes)) {
    throw new UnsupportedImageError(
      "vmdk descriptor files with separate extents are not supported; upload a monolithicSparse or streamOptimized vmdk",
    );
  }
  const h = parseVmdkSparseHeader(bytes);
  const capacity = safeNumber(h.capacity, "vmdk capacity") * SECTOR;
  if (capacity > MAX_VIRTUAL_SIZE)
    throw new UnsupportedImageError(`vmdk virtual size ${capacity} is too large`);
  const grainSectors = safeNumber(h.grainSize, "vmdk grainSize");
  if (!isPowerOfTwo(grainSectors) || grainSectors > MAX_GRAIN_SECTORS) {
    throw new UnsupportedImageError(`vmdk grain size ${grainSectors} sectors is not supported`);
  }
  if (
    h.flags & FLAG_COMPRESSED &&
    view(bytes).getUint16(VMDK_OFFSET.compressAlgorithm, true) !== COMPRESSION_DEFLATE
  ) {
    throw new UnsupportedImageError("vmdk compression algorithm is not deflate");
  }
  return { flags: h.flags, capacity, grainSectors, gtesPerGt: h.numGTEsPerGT, gdSector: h.gdOffset };
}

/**
 * Opens a monolithicSparse or streamOptimized vmdk. Grains are located through the grain directory
 * (from the footer for streamOptimized), so out-of-order grains work with ranged reads.
 */
export async function openVmdk(range: RangeReader, signal?: AbortSignal): Promise<DiskMap> {
  let h = parseHeader(await range.read(0, Math.min(VMDK_HEADER_SIZE, range.size), signal));
  if (h.gdSector === VMDK_GD_AT_END) {
    if (!Number.isFinite(range.size)) {
      throw new NeedsRangedReads(
        "this streamOptimized vmdk keeps its grain directory in a footer, at the end of the stream",
      );
    }
    if (range.size < VMDK_HEADER_SIZE + FOOTER_FROM_END) {
      throw new UnsupportedImageError(
        "this streamOptimized vmdk keeps its grain directory in a footer that cannot be reached",
      );
    }
    h = parseHeader(await range.read(range.size - FOOTER_FROM_END, VMDK_HEADER_SIZE, signal));
    if (h.gdSector === VMDK_GD_AT_END)
      throw new CorruptImageError("vmdk footer has no grain directory offset");
  }
  const fileSize = range.size;
  const grainBytes = h.grainSectors * SECTOR;
  const gtCoverage = grainBytes * h.gtesPerGt;
  const gdEntries = Math.ceil(h.capacity / gtCoverage);
  const gdOffset = safeNumber(h.gdSector, "vmdk gdOffset") * SECTOR;
  if (gdEntries * 4 > MAX_GD_BYTES) throw new UnsupportedImageError("vmdk grain directory is too large");
  checkRange(gdOffset, gdEntries * 4, fileSize, "vmdk grain directory");
  const compressed = (h.flags & FLAG_COMPRESSED) !== 0;
  const markers = (h.flags & FLAG_MARKERS) !== 0;
  const zeroGte = (h.flags & FLAG_ZERO_GRAIN_GTE) !== 0;
  const capacity = h.capacity;

  const decodeGrain = (length: number) => async (stored: Uint8Array) => {
    let data = stored;
    if (markers) {
      if (stored.length < MARKER_HEADER) throw new CorruptImageError("vmdk grain marker is truncated");
      const size = view(stored).getUint32(8, true);
      if (size === 0 || size > stored.length - MARKER_HEADER)
        throw new CorruptImageError("vmdk grain marker size is invalid");
      data = stored.subarray(MARKER_HEADER, MARKER_HEADER + size);
    }
    // One output chunk of a whole grain (see qcow2.ts).
    const out = await inflateAsync(data, { maxOutputLength: grainBytes, chunkSize: grainBytes });
    if (out.length < length) throw new CorruptImageError("vmdk compressed grain is short");
    return out.length === length ? out : out.subarray(0, length);
  };

  /** The extents of grain table `i` (`gt`, `count` entries): `tableGuest` guest bytes from `i × gtCoverage`. */
  function grainRuns(gt: DataView, i: number, count: number, tableGuest: number): Extent[] {
    const guestBase = i * gtCoverage;
    const runs = new ExtentRuns();
    for (let j = 0; j < count; j++) {
      const length = Math.min(grainBytes, tableGuest - j * grainBytes);
      const sector = gt.getUint32(j * 4, true);
      if (sector === 0 || (zeroGte && sector === GTE_ZEROED)) {
        runs.zero(length);
        continue;
      }
      const host = sector * SECTOR;
      if (compressed) {
        // The compressed size is only known from the marker; read up to two grains, as QEMU does.
        const hostLength = Math.min(2 * grainBytes, fileSize - host);
        if (hostLength <= 0)
          throw new CorruptImageError(`vmdk grain ${guestBase / grainBytes + j} lies outside the file`);
        runs.push({ kind: "encoded", length, host, hostLength, decode: decodeGrain(length) });
      } else {
        checkRange(host, length, fileSize, `vmdk grain ${guestBase / grainBytes + j}`);
        runs.data(host, length);
      }
    }
    return runs.done();
  }

  // Seeks by grain table: a walk of `[from, to)` reads the grain directory entries covering it, and no
  // grain table outside.
  async function* batches(sig?: AbortSignal, from?: number, to?: number): AsyncGenerator<Extent[]> {
    const { first: start, end } = entrySpan(from, to, gtCoverage, gdEntries);
    if (start === end) return;
    const gd = view(await range.read(gdOffset + start * 4, (end - start) * 4, sig));
    for (let i = start; i < end; i++) {
      const tableGuest = Math.min(gtCoverage, capacity - i * gtCoverage);
      const gtSector = gd.getUint32((i - start) * 4, true);
      if (gtSector === 0) {
        yield [{ kind: "zero", length: tableGuest }];
        continue;
      }
      const count = Math.ceil(tableGuest / grainBytes);
      checkRange(gtSector * SECTOR, count * 4, fileSize, `vmdk grain table ${i}`);
      yield grainRuns(view(await range.read(gtSector * SECTOR, count * 4, sig)), i, count, tableGuest);
    }
  }

  return { format: "vmdk", virtualSize: capacity, seekUnit: gtCoverage, batches };
}
