import { promisify } from "node:util";
import { constants, inflateRaw } from "node:zlib";
import { parseQcow2Header, QCOW2_INCOMPAT, QCOW2_KNOWN_INCOMPAT_MASK } from "../formats/qcow2.ts";
import { checkRange, safeNumber, view } from "./binary.ts";
import { type DiskMap, type Extent, ExtentRuns, entrySpan } from "./disk-map.ts";
import { CorruptImageError, UnsupportedImageError } from "./errors.ts";
import type { RangeReader } from "./ports.ts";
import { decodeZstdCluster } from "./zstd.ts";

// The header is parsed by the inspector's module; this file adds what conversion refuses and the
// L1/L2 walk. Table layout from QEMU's docs/interop/qcow2.txt.
const HEADER_READ = 4096;
const COMPRESSION_ZLIB = 0;
const COMPRESSION_ZSTD = 1;
/** Guest sizes beyond this are refused; QEMU's own limit is 2^61 but ours is what a Lambda can write. */
export const MAX_VIRTUAL_SIZE = 2 ** 50;

// Table entries: bits 9–55 carry the host offset; bit 62 marks a compressed cluster, bit 0 a zero one.
// Entries are read as two 32-bit halves because the high half of a valid offset fits 24 bits, so the
// result is an exact number and the hot loop avoids BigInt.
const HI_OFFSET_MASK = 0x00ffffff;
const LO_OFFSET_MASK = 0xfffffe00;
const HI_COMPRESSED = 0x40000000;
const LO_ZERO = 0x1;
const SECTOR = 512;

export interface Qcow2Geometry {
  version: 2 | 3;
  clusterBits: number;
  virtualSize: number;
  l1Offset: number;
  /** How compressed clusters are compressed (the image's compression type). */
  compression: "zlib" | "zstd";
}

const inflateRawAsync = promisify(inflateRaw);

const bit = (features: bigint, n: bigint) => (features >> n) & 1n;

/** Parses the qcow2 header and refuses what the converter does not implement. */
export function parseQcow2ForConversion(bytes: Uint8Array, fileSize: number): Qcow2Geometry {
  const h = parseQcow2Header(bytes);
  if (h.backingFileOffset !== 0n)
    throw new UnsupportedImageError("qcow2 images with a backing file are not accepted");
  if (h.cryptMethod !== 0) throw new UnsupportedImageError("encrypted qcow2 images are not supported");
  const f = h.incompatibleFeatures;
  if (f & ~QCOW2_KNOWN_INCOMPAT_MASK) {
    throw new UnsupportedImageError(`qcow2 has unknown incompatible features (0x${f.toString(16)})`);
  }
  if (bit(f, QCOW2_INCOMPAT.corrupt)) throw new CorruptImageError("qcow2 image is marked corrupt");
  if (bit(f, QCOW2_INCOMPAT.dirty)) {
    throw new UnsupportedImageError(
      "qcow2 image was not closed cleanly (dirty refcounts); repair it with qemu-img check -r all",
    );
  }
  if (bit(f, QCOW2_INCOMPAT.externalDataFile)) {
    throw new UnsupportedImageError("qcow2 images with an external data file are not accepted");
  }
  if (bit(f, QCOW2_INCOMPAT.extendedL2)) {
    throw new UnsupportedImageError("qcow2 extended L2 entries (subclusters) are not supported");
  }
  const compression = bit(f, QCOW2_INCOMPAT.compressionType) ? h.compressionType : COMPRESSION_ZLIB;
  if (compression !== COMPRESSION_ZLIB && compression !== COMPRESSION_ZSTD) {
    throw new UnsupportedImageError(`qcow2 compression type ${compression} is not supported`);
  }
  const virtualSize = safeNumber(h.size, "qcow2 size");
  if (virtualSize > MAX_VIRTUAL_SIZE)
    throw new UnsupportedImageError(`qcow2 virtual size ${virtualSize} is too large`);
  const l1Offset = safeNumber(h.l1TableOffset, "qcow2 l1_table_offset");
  const clusterSize = h.clusterSize;
  const needL1 = Math.ceil(virtualSize / (clusterSize * (clusterSize / 8)));
  checkRange(l1Offset, needL1 * 8, fileSize, "qcow2 L1 table");
  if (l1Offset % clusterSize !== 0) throw new CorruptImageError("qcow2 L1 table is not cluster-aligned");
  return {
    version: h.version,
    clusterBits: h.clusterBits,
    virtualSize,
    l1Offset,
    compression: compression === COMPRESSION_ZSTD ? "zstd" : "zlib",
  };
}

/** Opens a qcow2 image as a guest → host map. Metadata held: the L1 table and one L2 table at a time. */
export async function openQcow2(range: RangeReader, signal?: AbortSignal): Promise<DiskMap> {
  const head = await range.read(0, Math.min(HEADER_READ, range.size), signal);
  const h = parseQcow2ForConversion(head, range.size);
  const clusterSize = 2 ** h.clusterBits;
  const l2Entries = clusterSize / 8;
  const l2Coverage = clusterSize * l2Entries;
  const l1Used = Math.ceil(h.virtualSize / l2Coverage);
  const fileSize = range.size;
  // Compressed cluster descriptor: offset in bits 0..x-1, extra sector count in bits x..61.
  const csizeShift = 62 - (h.clusterBits - 8);
  const csizeMask = 2 ** (h.clusterBits - 8) - 1;

  // Inflated on libuv's pool, so that the engine's decodes ahead use every core (qemu-img too spreads
  // compressed clusters over its threads). Like QEMU, accept a stream that fills the cluster without a
  // final block (Z_SYNC_FLUSH), and cap the output so a hostile cluster cannot inflate beyond one cluster.
  // One output chunk of a whole cluster: zlib's default 16 KiB chunks cost a callback each and a
  // concatenation per cluster (0.36 CPU-s more per 256 MiB in a micro-benchmark).
  const inflate = (stored: Uint8Array): Promise<Uint8Array> =>
    inflateRawAsync(stored, {
      finishFlush: constants.Z_SYNC_FLUSH,
      maxOutputLength: clusterSize,
      chunkSize: clusterSize,
    });
  // zstd clusters are decoded in JavaScript, on this thread (Node 20 has no zstd).
  const decode =
    h.compression === "zstd" ? (stored: Uint8Array) => decodeZstdCluster(stored, clusterSize) : inflate;

  // Only the image's last cluster can be partial; its decode is cut to the guest bytes it holds.
  const decodeTo = (length: number) =>
    length === clusterSize ? decode : async (s: Uint8Array) => (await decode(s)).subarray(0, length);

  /**
   * The host offset of the L2 table of L1 entry `i`, at index `k` of `l1`, or undefined when the entry
   * maps nothing (zeros).
   */
  function l2Offset(l1: DataView, k: number, i: number): number | undefined {
    const hi = l1.getUint32(k * 8);
    const lo = l1.getUint32(k * 8 + 4);
    if ((hi & HI_OFFSET_MASK) === 0 && (lo & LO_OFFSET_MASK) === 0) return undefined;
    if ((hi & ~(HI_OFFSET_MASK | 0x80000000)) !== 0 || (lo & ~LO_OFFSET_MASK) !== 0) {
      throw new CorruptImageError(`qcow2 L1 entry ${i} has reserved bits set`);
    }
    const l2Host = (hi & HI_OFFSET_MASK) * 2 ** 32 + ((lo & LO_OFFSET_MASK) >>> 0);
    if (l2Host % clusterSize !== 0) throw new CorruptImageError(`qcow2 L2 table ${i} is not cluster-aligned`);
    checkRange(l2Host, clusterSize, fileSize, `qcow2 L2 table ${i}`);
    return l2Host;
  }

  /** The compressed cluster an L2 entry (`ehi`, `elo`) describes, `length` guest bytes at `guest`. */
  function compressedCluster(ehi: number, elo: number, length: number, guest: number): Extent {
    const hostOffset = (ehi & (2 ** (csizeShift - 32) - 1)) * 2 ** 32 + (elo >>> 0);
    const sectors = ((ehi & 0x3fffffff) >>> (csizeShift - 32)) & csizeMask;
    const hostLength = Math.min((sectors + 1) * SECTOR - (hostOffset % SECTOR), fileSize - hostOffset);
    if (hostOffset >= fileSize || hostLength <= 0) {
      throw new CorruptImageError(`qcow2 compressed cluster at guest ${guest} lies outside the file`);
    }
    return { kind: "encoded", length, host: hostOffset, hostLength, decode: decodeTo(length) };
  }

  /** Adds the cluster L2 entry `j` of `l2` maps to `runs`; `length` guest bytes at `guest`. */
  function addCluster(runs: ExtentRuns, l2: DataView, j: number, length: number, guest: number): void {
    const ehi = l2.getUint32(j * 8);
    const elo = l2.getUint32(j * 8 + 4);
    if (ehi & HI_COMPRESSED) {
      runs.push(compressedCluster(ehi, elo, length, guest));
      return;
    }
    // An unallocated entry (all zero bits) has host 0, like a zero cluster whose space was freed.
    const host = (ehi & HI_OFFSET_MASK) * 2 ** 32 + ((elo & LO_OFFSET_MASK) >>> 0);
    if (elo & LO_ZERO || host === 0) {
      runs.zero(length);
      return;
    }
    if (host % clusterSize !== 0 || host >= fileSize) {
      throw new CorruptImageError(`qcow2 data cluster at guest ${guest} has an invalid host offset`);
    }
    runs.data(host, length);
  }

  // Seeks by L1 entry: a walk of `[from, to)` reads the L1 entries covering it, and no L2 table outside.
  async function* batches(sig?: AbortSignal, from?: number, to?: number): AsyncGenerator<Extent[]> {
    const { first, end } = entrySpan(from, to, l2Coverage, l1Used);
    if (first === end) return;
    const l1 = view(await range.read(h.l1Offset + first * 8, (end - first) * 8, sig));
    for (let i = first; i < end; i++) {
      const guestBase = i * l2Coverage;
      const tableGuest = Math.min(l2Coverage, h.virtualSize - guestBase);
      const l2Host = l2Offset(l1, i - first, i);
      if (l2Host === undefined) {
        yield [{ kind: "zero", length: tableGuest }];
        continue;
      }
      const l2 = view(await range.read(l2Host, clusterSize, sig));
      const count = Math.ceil(tableGuest / clusterSize);
      const runs = new ExtentRuns();
      for (let j = 0; j < count; j++) {
        const length = j === count - 1 ? tableGuest - j * clusterSize : clusterSize;
        addCluster(runs, l2, j, length, guestBase + j * clusterSize);
      }
      yield runs.done();
    }
  }

  return { format: "qcow2", virtualSize: h.virtualSize, seekUnit: l2Coverage, batches };
}
