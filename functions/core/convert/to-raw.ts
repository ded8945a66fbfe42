import { windowBuffers } from "../buffers.ts";
import type { DiskMap } from "./disk-map.ts";
import {
  DEFAULT_DECODE_AHEAD,
  DEFAULT_GAP,
  DEFAULT_READ_AHEAD,
  DEFAULT_WINDOW,
  type Piece,
  type PlanOptions,
  pieces,
} from "./engine.ts";
import { checkVirtualSize, openDiskMap } from "./open.ts";
import type { ConvertSource, RangeReader, SourceFormat } from "./ports.ts";
import { openSource } from "./source.ts";
import { markStored } from "./stored.ts";
import { zeroBuffer } from "./zeros.ts";

/** Options shared by the converters. */
export interface ConvertOptions {
  signal?: AbortSignal;
  /** Target size of yielded chunks (default 4 MiB); every chunk but the last is between half and all of it. */
  chunkSize?: number;
  /** Largest coalesced host read (default 8 MiB). */
  windowSize?: number;
  /** Windows read ahead (default 3). */
  readAhead?: number;
  /** Refuse (UnsafeImageError, check `virtual size`) images larger than this, before producing anything. */
  maxVirtualSize?: number;
  /** Told the image's map once it is open, before any output (e.g. to size the write of the output). */
  onMap?: (map: DiskMap) => void;
  /** Host gap read through rather than split (default 256 KiB). */
  maxGap?: number;
  /** Guest bytes of compressed blocks decoded at once, on libuv's pool (default 4 MiB). */
  decodeAhead?: number;
  /**
   * `convertToQcow2` only: read the data once before writing, to leave out 64 KiB clusters that hold
   * only zeros, as qemu-img does (default true). Without it, every cluster a stored extent touches is
   * written, and a raw source is written whole. With a sequential stream, that first read takes it
   * and the second uses ranged reads.
   */
  detectZeros?: boolean;
  /**
   * Reuse buffers rather than allocate them per window and per chunk. The consumer then promises to
   * be done with a chunk once it has asked for chunks holding `heldBytes` more bytes after it (default
   * 0: when it asks for the next, having copied or written it first).
   */
  recycle?: boolean;
  heldBytes?: number;
}

export const DEFAULT_CHUNK = 4 << 20;

/**
 * The read planner's options for these conversion options. A consumer that holds `heldBytes` of
 * output behind its last chunk holds data that many bytes back, plus one chunk rechunk has not yet
 * yielded: window buffers are recycled only after that lag.
 */
export function planOptions(opts: ConvertOptions, forwardOnly: boolean): PlanOptions {
  const held = opts.heldBytes ?? 0;
  return {
    windowSize: opts.windowSize ?? DEFAULT_WINDOW,
    maxGap: opts.maxGap ?? DEFAULT_GAP,
    readAhead: opts.readAhead ?? DEFAULT_READ_AHEAD,
    decodeAhead: opts.decodeAhead ?? DEFAULT_DECODE_AHEAD,
    forwardOnly,
    recycle: opts.recycle ?? false,
    recycleLag: held > 0 ? held + (opts.chunkSize ?? DEFAULT_CHUNK) : 0,
    signal: opts.signal,
  };
}

/**
 * Re-chunks pieces into chunks of `[chunkSize / 2, chunkSize]` bytes (the last may be shorter).
 * Large pieces are passed on as views without copying, and runs of zeros as views of one shared zero
 * buffer (a `zeroBuffer`, which a consumer tells by its buffer without reading it): chunks are read-only and may be views into a larger buffer (copy one before writing to it
 * or transferring its ArrayBuffer). A chunk whose bytes are one run stored verbatim in the source is
 * marked with its offset there (`storedAt`).
 */
export async function* rechunk(
  source: AsyncIterable<Piece>,
  chunkSize: number,
  signal?: AbortSignal,
  recycle = false,
): AsyncGenerator<Uint8Array> {
  const half = Math.max(1, chunkSize >> 1);
  let zeros: Uint8Array | undefined;
  const acc = new Accumulator(chunkSize, recycle);
  try {
    for await (const piece of source) {
      let done = 0;
      while (done < piece.length) {
        signal?.throwIfAborted();
        const left = piece.length - done;
        if (acc.fill === 0 && left >= half) {
          const n = Math.min(left, chunkSize);
          if (piece.bytes) {
            const view = piece.bytes.subarray(done, done + n);
            markStored(view, piece.host === undefined ? undefined : piece.host + done);
            yield view;
          } else {
            zeros ??= zeroBuffer(chunkSize);
            yield zeros.subarray(0, n);
          }
          done += n;
          continue;
        }
        done += acc.add(piece, done);
        if (acc.full()) yield acc.take();
      }
    }
    if (acc.fill > 0) yield acc.take();
  } finally {
    // A consumer of reused chunks is done with the last one once it asks for more (or stops).
    if (recycle) acc.release();
  }
}

/** The chunk `rechunk` fills from pieces too small to pass on as they are. */
class Accumulator {
  fill = 0;
  private bytes: Uint8Array | undefined;
  // A reused buffer holds the last chunk's bytes: zeros must then be written, not skipped.
  private dirty = false;
  // Where the bytes so far are stored in the source, while they are one stored run.
  private host: number | undefined;

  constructor(
    private readonly size: number,
    private readonly recycle: boolean,
  ) {}

  /** Adds the bytes of `piece` from `done` on that fit; how many. */
  add(piece: Piece, done: number): number {
    if (!this.bytes) {
      // A reused buffer from an earlier conversion holds its bytes: zeros are written, not skipped.
      this.bytes = this.recycle ? new Uint8Array(windowBuffers.take(this.size)) : new Uint8Array(this.size);
      this.dirty = this.recycle;
    }
    const host = piece.host === undefined ? undefined : piece.host + done;
    if (this.fill === 0) this.host = host;
    else if (this.host !== undefined && host !== this.host + this.fill) this.host = undefined;
    const n = Math.min(piece.length - done, this.size - this.fill);
    // A fresh buffer is already zero-filled: zeros only move the fill mark.
    if (piece.bytes) this.bytes.set(piece.bytes.subarray(done, done + n), this.fill);
    else if (this.dirty) this.bytes.fill(0, this.fill, this.fill + n);
    this.fill += n;
    return n;
  }

  full(): boolean {
    return this.fill === this.size;
  }

  /** Gives the reused buffer back for the next conversion (recycle only: nothing holds its chunks). */
  release(): void {
    if (this.bytes) windowBuffers.give(this.bytes.buffer as ArrayBuffer);
    this.bytes = undefined;
  }

  /** The chunk filled so far, marked when it is one stored run; the next starts empty. */
  take(): Uint8Array {
    const bytes = this.bytes as Uint8Array;
    const chunk = this.fill === this.size ? bytes : bytes.subarray(0, this.fill);
    markStored(chunk, this.host);
    if (this.recycle) this.dirty = true;
    else this.bytes = undefined;
    this.fill = 0;
    return chunk;
  }
}

/** The guest bytes of `map`, read through `data`, in chunks as `opts` asks. */
export function rawChunks(
  map: DiskMap,
  data: RangeReader,
  opts: ConvertOptions,
  forwardOnly: boolean,
): AsyncGenerator<Uint8Array> {
  return rechunk(
    pieces(map, data, planOptions(opts, forwardOnly)),
    opts.chunkSize ?? DEFAULT_CHUNK,
    opts.signal,
    // An accumulated chunk is reused only by a consumer done with each chunk at the next.
    opts.recycle === true && !opts.heldBytes,
  );
}

/**
 * Converts a disk image to its raw bytes in guest order, as chunks of about `chunkSize` bytes.
 * Memory: about (readAhead + 1) × windowSize + chunkSize + one metadata table (≈ 40 MiB by default),
 * independent of the image size. Reads through `source.range` in coalesced windows, or through one
 * `source.sequential` stream (ranged reads only for data stored out of order) when given.
 */
export async function* convertToRaw(
  format: SourceFormat,
  source: ConvertSource,
  opts: ConvertOptions = {},
): AsyncGenerator<Uint8Array> {
  const opened = openSource(source, opts.signal);
  try {
    const map = await openDiskMap(format, opened.meta, opts.signal);
    checkVirtualSize(map, opts.maxVirtualSize);
    opts.onMap?.(map);
    yield* rawChunks(map, opened.data, opts, opened.forwardOnly);
  } finally {
    await opened.close();
  }
}
