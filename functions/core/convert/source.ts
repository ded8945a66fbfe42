import { CorruptImageError, NonMonotonicSource } from "./errors.ts";
import type { ConvertSource, RangeReader, SequentialSource } from "./ports.ts";

/** Bytes of already-passed stream kept for reads that step back a little (overlapping compressed clusters). */
export const DEFAULT_RETAIN = 1 << 20;

/** Reads `length` bytes at `offset`, zero-filling what lies past the end of the object (as qemu does). */
export async function readPadded(
  range: RangeReader,
  offset: number,
  length: number,
  signal?: AbortSignal,
  into?: Uint8Array,
): Promise<Uint8Array> {
  const available = Math.max(0, Math.min(length, range.size - offset));
  if (available === length) return range.read(offset, length, signal, into);
  const out = into ?? new Uint8Array(length);
  if (available > 0) out.set(await range.read(offset, available, signal, into?.subarray(0, available)));
  out.fill(0, Math.max(0, available));
  return out;
}

/** `range`, with what lies past its end read as zeros. */
export function paddedRange(range: RangeReader): RangeReader {
  return { size: range.size, read: (o, l, s, into) => readPadded(range, o, l, s, into) };
}

/**
 * A RangeReader over one sequential stream. Reads must come in (roughly) increasing offset order:
 * a read behind the retained tail goes to `fallback` (a ranged GET) or fails with
 * NonMonotonicSource. Reads are served in call order, so callers may issue several at once.
 * Memory: `retain` bytes plus the bytes of the read being served plus one stream chunk.
 */
export class ForwardReader implements RangeReader {
  readonly size: number;
  private readonly chunks: Uint8Array[] = [];
  private bufStart = 0;
  private bufEnd = 0;
  private iterator: AsyncIterator<Uint8Array> | undefined;
  private ended = false;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly controller = new AbortController();
  /** The source lends its chunks: each is given back once dropped, and no read returns a view of one. */
  private readonly giveBack: ((chunk: Uint8Array) => void) | undefined;

  constructor(
    private readonly source: SequentialSource,
    private readonly fallback: RangeReader | undefined,
    size: number | undefined,
    private readonly retain = DEFAULT_RETAIN,
    signal?: AbortSignal,
  ) {
    this.size = fallback?.size ?? size ?? Number.POSITIVE_INFINITY;
    this.giveBack = source.release?.bind(source);
    // Aborting the conversion stops the stream too, so a stalled GET cannot hold up cleanup.
    signal?.addEventListener("abort", () => this.controller.abort(signal.reason), { once: true });
  }

  read(offset: number, length: number, signal?: AbortSignal, into?: Uint8Array): Promise<Uint8Array> {
    const result = this.queue.then(() => this.serve(offset, length, signal, into));
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Stops the underlying stream (its `return()` closes the connection or file). */
  async close(): Promise<void> {
    this.controller.abort();
    const it = this.iterator;
    this.iterator = undefined;
    this.dropAll();
    if (it?.return) await it.return().catch(() => undefined);
  }

  private async serve(
    offset: number,
    length: number,
    signal?: AbortSignal,
    into?: Uint8Array,
  ): Promise<Uint8Array> {
    signal?.throwIfAborted();
    if (offset < this.bufStart) {
      if (this.fallback) return readPadded(this.fallback, offset, length, signal, into);
      throw new NonMonotonicSource(offset, this.bufStart);
    }
    const end = offset + length;
    if (offset >= this.bufEnd) {
      // Nothing buffered is needed: drop it and skip the gap without keeping it.
      this.dropAll();
      this.bufStart = this.bufEnd;
      while (!this.ended && this.bufEnd <= offset) {
        const chunk = await this.pull();
        if (chunk && this.bufEnd > offset) {
          this.chunks.push(chunk.subarray(chunk.length - (this.bufEnd - offset)));
          this.bufStart = offset;
        } else {
          this.bufStart = this.bufEnd;
          if (chunk) this.giveBack?.(chunk);
        }
      }
    }
    while (!this.ended && this.bufEnd < end) {
      const chunk = await this.pull();
      if (chunk) this.chunks.push(chunk);
    }
    // A read that starts past the end of a stream of unknown length: metadata pointing beyond the
    // image. One that only runs past it (a compressed block read with an upper-bound length, like a
    // VMDK grain) gets zeros for the rest, as readPadded gives a ranged source.
    if (offset >= this.bufEnd && length > 0 && this.size === Number.POSITIVE_INFINITY) {
      throw new CorruptImageError(
        `the image ends at ${this.bufEnd} but its metadata refers to offset ${end}`,
      );
    }
    const out = this.copyOut(offset, length, into);
    this.trim(end - this.retain);
    return out;
  }

  private async pull(): Promise<Uint8Array | undefined> {
    this.iterator ??= this.source.stream(this.controller.signal)[Symbol.asyncIterator]();
    const next = await this.iterator.next();
    if (next.done) {
      this.ended = true;
      return undefined;
    }
    this.bufEnd += next.value.length;
    return next.value;
  }

  private copyOut(offset: number, length: number, into?: Uint8Array): Uint8Array {
    let pos = this.bufStart;
    let out: Uint8Array | undefined;
    let written = 0;
    for (const chunk of this.chunks) {
      const chunkEnd = pos + chunk.length;
      if (chunkEnd > offset && pos < offset + length) {
        const from = Math.max(0, offset - pos);
        const to = Math.min(chunk.length, offset + length - pos);
        if (!out && to - from === length && !this.giveBack) return chunk.subarray(from, to);
        // Uninitialised is safe: the loop fills every byte unless the stream ended, handled below.
        out ??= into ?? Buffer.allocUnsafe(length);
        out.set(chunk.subarray(from, to), written);
        written += to - from;
      }
      pos = chunkEnd;
    }
    // Past the end of the object: zeros, like readPadded.
    if (out && written < length) out.fill(0, written);
    return out ?? (into ? into.fill(0) : new Uint8Array(length));
  }

  private trim(keepFrom: number): void {
    while (this.chunks.length > 1) {
      const first = this.chunks[0];
      if (!first || this.bufStart + first.length > keepFrom) break;
      this.chunks.shift();
      this.bufStart += first.length;
      this.giveBack?.(first);
    }
  }

  private dropAll(): void {
    if (this.giveBack) for (const chunk of this.chunks) this.giveBack(chunk);
    this.chunks.length = 0;
  }
}

/** The two readers a conversion uses: one for metadata, one for data windows. */
export interface OpenedSource {
  meta: RangeReader;
  data: RangeReader;
  /** True when nothing can seek: the planner then keeps every read in increasing order. */
  forwardOnly: boolean;
  close(): Promise<void>;
}

/** Chooses how to read: ranged reads, or one sequential stream with ranged reads as fallback. */
export function openSource(source: ConvertSource, signal?: AbortSignal): OpenedSource {
  const { range, sequential } = source;
  if (sequential) {
    const forward = new ForwardReader(sequential, range, source.size, DEFAULT_RETAIN, signal);
    return {
      meta: range ?? forward,
      data: forward,
      forwardOnly: !range,
      close: () => forward.close(),
    };
  }
  if (!range) throw new TypeError("a conversion source needs a range reader or a sequential stream");
  return { meta: range, data: paddedRange(range), forwardOnly: false, close: async () => undefined };
}
