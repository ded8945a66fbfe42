import { QCOW2_MAGIC } from "../formats/qcow2.ts";
import { ceilDiv } from "./binary.ts";
import type { DiskMap, Extent } from "./disk-map.ts";
import { type Piece, pieces } from "./engine.ts";
import { UnsupportedImageError } from "./errors.ts";
import { checkVirtualSize, openDiskMap } from "./open.ts";
import type { ConvertSource, SourceFormat } from "./ports.ts";
import { openSource, paddedRange } from "./source.ts";
import { type ConvertOptions, DEFAULT_CHUNK, planOptions, rechunk } from "./to-raw.ts";

// Output: qcow2 v3 (compat 1.1), 64 KiB clusters, 16-bit refcounts, no extensions, no snapshots.
const CLUSTER_BITS = 16;
const CLUSTER = 1 << CLUSTER_BITS;
const L2_ENTRIES = CLUSTER / 8;
const REFCOUNT_ORDER = 4;
const REFCOUNTS_PER_BLOCK = (CLUSTER * 8) / 2 ** REFCOUNT_ORDER;
const HEADER_LENGTH = 104;
const COPIED = 0x80000000; // bit 63 of an L1/L2 entry (high word): refcount is exactly 1
/** Largest output the layout code handles: offsets stay below 2^48 so entries fit two 32-bit halves. */
const MAX_OUTPUT = 2 ** 47;

/** Where everything goes in the output file, in cluster indices. */
export interface Qcow2Layout {
  virtualSize: number;
  l1Entries: number;
  l1Cluster: number;
  refcountTableCluster: number;
  refcountTableClusters: number;
  refcountBlockCluster: number;
  refcountBlocks: number;
  l2Cluster: number;
  /** For each L1 entry, the index of its L2 table among the written ones, or -1. */
  l2Index: Int32Array;
  dataCluster: number;
  dataClusters: number;
  totalClusters: number;
  /** Bit per guest cluster: set when the cluster holds data and is written. */
  allocated: Uint8Array;
}

function isSet(bits: Uint8Array, i: number): boolean {
  return (((bits[i >> 3] ?? 0) >> (i & 7)) & 1) === 1;
}

const ZEROS = new Uint8Array(CLUSTER);

/** True when `bytes` (at most one cluster) are all zero; memcmp speed. */
function allZero(bytes: Uint8Array): boolean {
  return Buffer.compare(bytes, ZEROS.subarray(0, bytes.length)) === 0;
}

/** The guest clusters that hold data: a bitmap and its count. */
class AllocatedClusters {
  readonly bits: Uint8Array;
  count = 0;

  constructor(guestClusters: number) {
    this.bits = new Uint8Array(ceilDiv(guestClusters, 8));
  }

  has(c: number): boolean {
    return isSet(this.bits, c);
  }

  mark(c: number): void {
    if (this.has(c)) return;
    this.bits[c >> 3] = (this.bits[c >> 3] ?? 0) | (1 << (c & 7));
    this.count++;
  }

  /** Marks every cluster of the guest bytes [start, start + length). */
  markRange(start: number, length: number): void {
    const last = Math.floor((start + length - 1) / CLUSTER);
    for (let c = Math.floor(start / CLUSTER); c <= last; c++) this.mark(c);
  }
}

/** Marks the clusters of `contents` (guest bytes in order) that hold a non-zero byte. */
async function markContents(clusters: AllocatedClusters, contents: AsyncIterable<Piece>): Promise<void> {
  let guest = 0;
  for await (const piece of contents) {
    const bytes = piece.bytes;
    for (let at = 0; bytes && at < piece.length; ) {
      const c = Math.floor((guest + at) / CLUSTER);
      const end = Math.min(piece.length, (c + 1) * CLUSTER - guest);
      if (!clusters.has(c) && !allZero(bytes.subarray(at, end))) clusters.mark(c);
      at = end;
    }
    guest += piece.length;
  }
}

/** Marks every cluster a stored extent of `map` touches. */
async function markStored(clusters: AllocatedClusters, map: DiskMap, signal?: AbortSignal): Promise<void> {
  let guest = 0;
  for await (const batch of map.batches(signal)) {
    for (const e of batch) {
      if (e.kind !== "zero" && e.length > 0) clusters.markRange(guest, e.length);
      guest += e.length;
    }
  }
}

/** For each L1 entry, the index of its L2 table among those written, or -1 when it maps no data. */
function indexL2Tables(clusters: AllocatedClusters, l1Entries: number, guestClusters: number) {
  const l2Index = new Int32Array(l1Entries).fill(-1);
  let l2Tables = 0;
  for (let i = 0; i < l1Entries; i++) {
    const end = Math.min(guestClusters, (i + 1) * L2_ENTRIES);
    for (let c = i * L2_ENTRIES; c < end; c++) {
      if (clusters.has(c)) {
        l2Index[i] = l2Tables++;
        break;
      }
    }
  }
  return { l2Index, l2Tables };
}

/**
 * Computes the output layout. From the source's allocation map alone (metadata only, no data), every
 * cluster a stored extent touches counts as allocated; from `contents`, the map's guest bytes in
 * order, only clusters holding a non-zero byte do.
 */
export async function planQcow2Layout(
  map: DiskMap,
  signal?: AbortSignal,
  contents?: AsyncIterable<Piece>,
): Promise<Qcow2Layout> {
  const { virtualSize } = map;
  const guestClusters = ceilDiv(virtualSize, CLUSTER);
  const clusters = new AllocatedClusters(guestClusters);
  if (contents) await markContents(clusters, contents);
  else await markStored(clusters, map, signal);
  const allocated = clusters.bits;
  const dataClusters = clusters.count;
  const l1Entries = ceilDiv(guestClusters, L2_ENTRIES);
  const { l2Index, l2Tables } = indexL2Tables(clusters, l1Entries, guestClusters);
  const l1Clusters = Math.max(1, ceilDiv(l1Entries * 8, CLUSTER));
  // The refcount structures count themselves: grow them until they cover every cluster.
  let refcountBlocks = 1;
  let refcountTableClusters = 1;
  let total = 0;
  for (;;) {
    total = 1 + l1Clusters + refcountTableClusters + refcountBlocks + l2Tables + dataClusters;
    const needBlocks = ceilDiv(total, REFCOUNTS_PER_BLOCK);
    const needTable = ceilDiv(needBlocks * 8, CLUSTER);
    if (needBlocks <= refcountBlocks && needTable <= refcountTableClusters) break;
    refcountBlocks = Math.max(refcountBlocks, needBlocks);
    refcountTableClusters = Math.max(refcountTableClusters, needTable);
  }
  if (total * CLUSTER > MAX_OUTPUT) throw new UnsupportedImageError("the qcow2 output would be too large");
  const l1Cluster = 1;
  const refcountTableCluster = l1Cluster + l1Clusters;
  const refcountBlockCluster = refcountTableCluster + refcountTableClusters;
  const l2Cluster = refcountBlockCluster + refcountBlocks;
  const dataCluster = l2Cluster + l2Tables;
  return {
    virtualSize,
    l1Entries,
    l1Cluster,
    refcountTableCluster,
    refcountTableClusters,
    refcountBlockCluster,
    refcountBlocks,
    l2Cluster,
    l2Index,
    dataCluster,
    dataClusters,
    totalClusters: total,
    allocated,
  };
}

function setOffset(dv: DataView, at: number, offset: number, flags = 0): void {
  dv.setUint32(at, (Math.floor(offset / 2 ** 32) | flags) >>> 0);
  dv.setUint32(at + 4, offset >>> 0);
}

function header(l: Qcow2Layout): Uint8Array {
  const out = new Uint8Array(CLUSTER);
  const dv = new DataView(out.buffer);
  out.set(QCOW2_MAGIC, 0);
  dv.setUint32(4, 3);
  dv.setUint32(20, CLUSTER_BITS);
  dv.setBigUint64(24, BigInt(l.virtualSize));
  dv.setUint32(36, l.l1Entries);
  dv.setBigUint64(40, BigInt(l.l1Cluster * CLUSTER));
  dv.setBigUint64(48, BigInt(l.refcountTableCluster * CLUSTER));
  dv.setUint32(56, l.refcountTableClusters);
  dv.setUint32(96, REFCOUNT_ORDER);
  dv.setUint32(100, HEADER_LENGTH);
  // The header extension area that follows is all zeros: an end-of-extensions marker.
  return out;
}

/** Metadata clusters in file order, generated one table at a time (at most one cluster-sized L2 table live). */
function* metadata(l: Qcow2Layout): Generator<Piece> {
  yield { length: CLUSTER, bytes: header(l) };
  const l1 = new Uint8Array(ceilDiv(l.l1Entries * 8, CLUSTER) * CLUSTER || CLUSTER);
  const l1v = new DataView(l1.buffer);
  for (let i = 0; i < l.l1Entries; i++) {
    const idx = l.l2Index[i] ?? -1;
    if (idx >= 0) setOffset(l1v, i * 8, (l.l2Cluster + idx) * CLUSTER, COPIED);
  }
  yield { length: l1.length, bytes: l1 };
  const table = new Uint8Array(l.refcountTableClusters * CLUSTER);
  const tv = new DataView(table.buffer);
  for (let b = 0; b < l.refcountBlocks; b++) setOffset(tv, b * 8, (l.refcountBlockCluster + b) * CLUSTER);
  yield { length: table.length, bytes: table };
  for (let b = 0; b < l.refcountBlocks; b++) {
    const block = new Uint8Array(CLUSTER);
    const bv = new DataView(block.buffer);
    const first = b * REFCOUNTS_PER_BLOCK;
    for (let c = first; c < Math.min(l.totalClusters, first + REFCOUNTS_PER_BLOCK); c++) {
      bv.setUint16((c - first) * 2, 1);
    }
    yield { length: CLUSTER, bytes: block };
  }
  const guestClusters = ceilDiv(l.virtualSize, CLUSTER);
  let rank = 0;
  for (let i = 0; i < l.l1Entries; i++) {
    if ((l.l2Index[i] ?? -1) < 0) continue;
    const l2 = new Uint8Array(CLUSTER);
    const lv = new DataView(l2.buffer);
    for (let c = i * L2_ENTRIES; c < Math.min(guestClusters, (i + 1) * L2_ENTRIES); c++) {
      if (isSet(l.allocated, c))
        setOffset(lv, (c - i * L2_ENTRIES) * 8, (l.dataCluster + rank++) * CLUSTER, COPIED);
    }
    yield { length: CLUSTER, bytes: l2 };
  }
}

/** Cuts guest bytes `[start, start + length)` into runs of clusters the layout keeps, or leaves out. */
function* allocationRuns(
  l: Qcow2Layout,
  start: number,
  length: number,
): Generator<{ at: number; length: number; keep: boolean }> {
  for (let at = 0; at < length; ) {
    const keep = isSet(l.allocated, Math.floor((start + at) / CLUSTER));
    let end = Math.min(length, (Math.floor((start + at) / CLUSTER) + 1) * CLUSTER - start);
    while (end < length && isSet(l.allocated, Math.floor((start + end) / CLUSTER)) === keep) {
      end = Math.min(length, end + CLUSTER);
    }
    yield { at, length: end - at, keep };
    at = end;
  }
}

/** Keeps the guest bytes of allocated clusters only, padding the last one to a whole cluster. */
async function* allocatedData(source: AsyncIterable<Piece>, l: Qcow2Layout): AsyncGenerator<Piece> {
  let guest = 0;
  for await (const piece of source) {
    for (const run of allocationRuns(l, guest, piece.length)) {
      if (!run.keep) continue;
      const { at, length } = run;
      yield piece.bytes ? { length, bytes: piece.bytes.subarray(at, at + length) } : { length };
    }
    guest += piece.length;
  }
  const tail = guest % CLUSTER;
  if (tail !== 0 && isSet(l.allocated, Math.floor(guest / CLUSTER))) yield { length: CLUSTER - tail };
}

/**
 * `map` with the stored runs of clusters the layout leaves out turned into zeros, so that the pass
 * that writes the data does not read them again (a sparse raw is then read whole once, and its data
 * twice). Encoded extents are kept: they cannot be read in part.
 */
function leavingOut(map: DiskMap, l: Qcow2Layout): DiskMap {
  return {
    format: map.format,
    virtualSize: map.virtualSize,
    async *batches(signal?: AbortSignal) {
      let guest = 0;
      for await (const batch of map.batches(signal)) {
        const out: Extent[] = [];
        for (const e of batch) {
          if (e.kind === "data") {
            for (const { at, length, keep } of allocationRuns(l, guest, e.length)) {
              out.push(keep ? { kind: "data", host: e.host + at, length } : { kind: "zero", length });
            }
          } else out.push(e);
          guest += e.length;
        }
        yield out;
      }
    },
  };
}

async function* concat(first: Iterable<Piece>, rest: AsyncIterable<Piece>): AsyncGenerator<Piece> {
  yield* first;
  yield* rest;
}

/**
 * Converts a disk image (any supported format, raw included) to a qcow2 v3 file written strictly
 * sequentially. A first pass finds the 64 KiB clusters to write: by default it reads the data and
 * keeps clusters holding a non-zero byte (`detectZeros`), otherwise it reads metadata only and keeps
 * every cluster a stored extent touches. The layout is then fixed: header, L1, refcount table,
 * refcount blocks, L2 tables, data clusters in guest order. Unallocated and zero extents are omitted.
 * Memory: that of `convertToRaw` plus one bit per guest cluster (2 KiB per GiB of virtual size).
 */
export async function* convertToQcow2(
  format: SourceFormat,
  source: ConvertSource,
  opts: ConvertOptions = {},
): AsyncGenerator<Uint8Array> {
  if (source.sequential && !source.range) {
    throw new UnsupportedImageError("conversion to qcow2 reads the source twice and needs a range reader");
  }
  const opened = openSource(source, opts.signal);
  try {
    const first = await openDiskMap(format, opened.meta, opts.signal);
    checkVirtualSize(first, opts.maxVirtualSize);
    opts.onMap?.(first);
    const detectZeros = opts.detectZeros ?? true;
    // The scan is done with each piece when it asks for the next: its buffers are reused.
    const contents = detectZeros
      ? pieces(first, opened.data, planOptions({ ...opts, recycle: true, heldBytes: 0 }, opened.forwardOnly))
      : undefined;
    const layout = await planQcow2Layout(first, opts.signal, contents);
    const map = await openDiskMap(format, opened.meta, opts.signal);
    // After a scan the sequential stream, if any, is spent: the data is read again with ranged reads,
    // only where the scan found some.
    const data =
      detectZeros && source.range
        ? pieces(leavingOut(map, layout), paddedRange(source.range), planOptions(opts, false))
        : pieces(map, opened.data, planOptions(opts, opened.forwardOnly));
    yield* rechunk(
      concat(metadata(layout), allocatedData(data, layout)),
      opts.chunkSize ?? DEFAULT_CHUNK,
      opts.signal,
      // An accumulated chunk is reused only by a consumer done with each chunk at the next.
      opts.recycle === true && !opts.heldBytes,
    );
  } finally {
    await opened.close();
  }
}
