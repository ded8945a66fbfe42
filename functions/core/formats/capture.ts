import { KiB, MiB } from "./bytes.ts";
import { MalformedImageError } from "./errors.ts";

/**
 * Capture of a byte stream for inspection, after oslo.utils' CaptureRegion: the stream is seen once,
 * in chunks of any size, and only named regions are kept.
 *
 * Memory bound, per inspection: at most `MAX_CAPTURE_BYTES` (8 MiB) across every layer (the upload
 * and, for gzip, the inflated stream). That covers the head of each layer (`HEAD_BYTES`, enough
 * for every fixed-offset header: the VHDX region table ends at 256 KiB, the ISO primary volume
 * descriptor at 34 KiB), a rolling tail (`TAIL_BYTES`, for the VHD footer and the VMDK stream
 * footer), and the regions formats ask for once a header tells them where to look.
 */
export const HEAD_BYTES = 1 * MiB;
export const TAIL_BYTES = 4 * KiB;
export const MAX_CAPTURE_BYTES = 8 * MiB;

/** Counts captured bytes across the layers of one inspection and refuses to go past the bound. */
export class CaptureBudget {
  private used = 0;
  private highWater = 0;
  constructor(readonly limit: number = MAX_CAPTURE_BYTES) {}

  reserve(bytes: number, format: string, what: string): void {
    if (this.used + bytes > this.limit) {
      throw new MalformedImageError(
        format,
        `${what} needs ${bytes} bytes of metadata, more than the inspector keeps (${this.limit} bytes in all)`,
      );
    }
    this.used += bytes;
    this.highWater = Math.max(this.highWater, this.used);
  }

  /** Bytes held now. */
  get captured(): number {
    return this.used;
  }
  /** Most bytes ever held by this inspection. */
  get peak(): number {
    return this.highWater;
  }
}

/** A byte range a format asked for; complete once the stream has passed its end. */
export class Region {
  private buffer: Uint8Array | undefined;
  /** True when part of the range was already behind the stream and outside the head when asked for. */
  missed = false;

  constructor(
    private readonly layer: StreamLayer,
    readonly offset: number,
    readonly length: number,
    /** Served from the layer's head buffer instead of a copy of its own. */
    private readonly inHead: boolean,
  ) {
    if (!inHead) this.buffer = new Uint8Array(length);
  }

  get end(): number {
    return this.offset + this.length;
  }

  get complete(): boolean {
    return !this.missed && this.layer.position >= this.end;
  }

  /** The region's bytes; throws unless complete. */
  get data(): Uint8Array {
    if (!this.complete) {
      throw new MalformedImageError(
        "stream",
        `bytes ${this.offset}..${this.end} are not available (file has ${this.layer.position} bytes)`,
      );
    }
    return this.inHead ? this.layer.head().subarray(this.offset, this.end) : (this.buffer as Uint8Array);
  }

  /**
   * The region as a reader that pads what the stream never delivered with zeros, as QEMU's reads
   * past the end of a file do. Only meaningful once the stream has ended; empty if `missed`.
   */
  zeroPadded(): Uint8Array {
    if (this.missed) return new Uint8Array(0);
    if (this.complete) return this.data;
    const out = new Uint8Array(this.length);
    if (this.inHead) out.set(this.layer.head().subarray(this.offset, this.end));
    else out.set(this.buffer as Uint8Array);
    return out;
  }

  /** @internal copies the overlap of a chunk that starts at `chunkStart`. */
  fill(chunk: Uint8Array, chunkStart: number): void {
    if (this.buffer === undefined) return;
    const from = Math.max(this.offset, chunkStart);
    const to = Math.min(this.end, chunkStart + chunk.length);
    if (from >= to) return;
    this.buffer.set(chunk.subarray(from - chunkStart, to - chunkStart), from - this.offset);
  }
}

/**
 * One sequential byte stream (the upload, or the inflated stream inside a gzip upload): keeps its
 * head, a rolling tail and the requested regions, and counts its length.
 */
export class StreamLayer {
  position = 0;
  ended = false;
  private headBuffer: Uint8Array | undefined;
  private readonly headLimit: number;
  private readonly ring = new Uint8Array(TAIL_BYTES);
  private ringWrite = 0;
  private pending: Region[] = [];
  /** The chunk just pushed, held only until `releaseChunk()` so regions asked for in response to it can still be filled. */
  private lastChunk: Uint8Array | undefined;
  private lastChunkStart = 0;

  /** `sizeHint` (when the length is known upfront) only shrinks the head buffer for small objects. */
  constructor(
    private readonly budget: CaptureBudget,
    sizeHint?: number,
  ) {
    this.headLimit = Math.min(HEAD_BYTES, sizeHint ?? HEAD_BYTES);
    this.budget.reserve(this.headLimit + TAIL_BYTES, "stream", "head and tail capture");
  }

  push(chunk: Uint8Array): void {
    const start = this.position;
    if (start < this.headLimit) {
      this.headBuffer ??= new Uint8Array(this.headLimit);
      const take = Math.min(chunk.length, this.headLimit - start);
      this.headBuffer.set(chunk.subarray(0, take), start);
    }
    this.pushTail(chunk);
    this.lastChunk = chunk;
    this.lastChunkStart = start;
    this.position += chunk.length;
    if (this.pending.length > 0) {
      for (const region of this.pending) region.fill(chunk, start);
      this.pending = this.pending.filter((r) => r.end > this.position);
    }
  }

  private pushTail(chunk: Uint8Array): void {
    if (chunk.length >= TAIL_BYTES) {
      this.ring.set(chunk.subarray(chunk.length - TAIL_BYTES));
      this.ringWrite = 0;
      return;
    }
    const first = Math.min(chunk.length, TAIL_BYTES - this.ringWrite);
    this.ring.set(chunk.subarray(0, first), this.ringWrite);
    this.ring.set(chunk.subarray(first), 0);
    this.ringWrite = (this.ringWrite + chunk.length) % TAIL_BYTES;
  }

  /** Drops the reference to the caller's last chunk (the caller may reuse its buffer). */
  releaseChunk(): void {
    this.lastChunk = undefined;
  }

  end(): void {
    this.ended = true;
    this.pending = [];
  }

  /**
   * The lowest offset not yet streamed whose bytes the inspection needs: the head while inside it, else
   * the start of the nearest region a format is waiting for; undefined when nothing is waiting. Bytes
   * before that offset are never read by anything but the rolling tail.
   */
  wanted(): number | undefined {
    if (this.position < this.headLimit) return this.position;
    let lowest: number | undefined;
    for (const region of this.pending) {
      const from = Math.max(region.offset, this.position);
      if (lowest === undefined || from < lowest) lowest = from;
    }
    return lowest;
  }

  /** The first `min(position, HEAD_BYTES)` bytes. */
  head(): Uint8Array {
    if (this.headBuffer === undefined) return new Uint8Array(0);
    return this.headBuffer.subarray(0, Math.min(this.position, this.headLimit));
  }

  /** The last `min(position, TAIL_BYTES)` bytes (a copy). */
  tail(): Uint8Array {
    const n = Math.min(this.position, TAIL_BYTES);
    const out = new Uint8Array(n);
    // The ring's newest byte sits just before ringWrite.
    const startInRing = (this.ringWrite - n + TAIL_BYTES) % TAIL_BYTES;
    const first = Math.min(n, TAIL_BYTES - startInRing);
    out.set(this.ring.subarray(startInRing, startInRing + first));
    out.set(this.ring.subarray(0, n - first), first);
    return out;
  }

  /**
   * Asks for `[offset, offset + length)`. Served from the head when it lies there; otherwise copied
   * as the stream passes, if the stream has not passed its start yet (else `missed`).
   */
  request(offset: number, length: number, format: string, what: string): Region {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new MalformedImageError(format, `${what}: invalid range ${offset}+${length}`);
    }
    if (offset + length <= this.headLimit) return new Region(this, offset, length, true);
    this.budget.reserve(length, format, what);
    const region = new Region(this, offset, length, false);
    if (offset < this.position) {
      // Bytes already streamed past are still here only in the head or in the chunk just pushed.
      const passedEnd = Math.min(offset + length, this.position);
      const fromChunk = this.lastChunk === undefined ? this.position : this.lastChunkStart;
      if (Math.min(passedEnd, fromChunk) > this.headLimit && offset < fromChunk) {
        region.missed = true;
        return region;
      }
      if (offset < fromChunk)
        region.fill(this.head().subarray(offset, Math.min(passedEnd, fromChunk)), offset);
      if (this.lastChunk !== undefined) region.fill(this.lastChunk, this.lastChunkStart);
    }
    if (!this.ended && offset + length > this.position) this.pending.push(region);
    return region;
  }
}
