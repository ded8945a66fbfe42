/**
 * gzip wrapper (RFC 1952): the upload is inflated as it streams, with node:zlib, and the inflated
 * bytes are inspected like any other upload. Inflation stops as soon as the inflated length passes
 * `maxGzipRatio × totalSize` (the `gzip bomb` check), so a bomb costs at most one zlib output chunk
 * beyond the limit.
 *
 * Memory bound: the caller awaits each `write`, so at most one compressed chunk is queued, plus
 * zlib's window (32 KiB), one output chunk (`INFLATE_CHUNK_BYTES`) and the readable buffer
 * (flowing, drained synchronously into the inner inspection).
 */
import { createGunzip, type Gunzip } from "node:zlib";
import { KiB } from "./bytes.ts";

export const GZIP_MAGIC = Uint8Array.of(0x1f, 0x8b, 0x08);
export const INFLATE_CHUNK_BYTES = 64 * KiB;

/** True when `head` starts with a gzip member header using deflate. */
export function isGzip(head: Uint8Array): boolean {
  return (
    head.length >= 3 && head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1] && head[2] === GZIP_MAGIC[2]
  );
}

const RESOLVED: Promise<void> = Promise.resolve();

/** A streaming inflater that hands each inflated chunk to `sink` and stops past `limitBytes`. */
export class GzipInflater {
  inflated = 0;
  /** Set once the inflated length passed the limit; inflation has stopped. */
  overLimit = false;
  /** The zlib error, if the stream is not valid gzip. */
  error: Error | undefined;
  private readonly gunzip: Gunzip;
  private readonly closed: Promise<void>;
  private readonly ended: Promise<void>;

  constructor(
    private readonly limitBytes: number,
    private readonly sink: (chunk: Uint8Array) => void,
  ) {
    this.gunzip = createGunzip({ chunkSize: INFLATE_CHUNK_BYTES });
    this.closed = new Promise((resolve) => this.gunzip.once("close", () => resolve()));
    this.ended = new Promise((resolve) => {
      this.gunzip.once("end", () => resolve());
      this.gunzip.once("close", () => resolve());
    });
    this.gunzip.on("error", (error) => {
      this.error ??= error;
    });
    this.gunzip.on("data", (chunk: Buffer) => this.onData(chunk));
  }

  private onData(chunk: Buffer): void {
    if (this.overLimit) return;
    this.inflated += chunk.length;
    if (this.inflated > this.limitBytes) {
      this.overLimit = true;
      this.gunzip.destroy();
      return;
    }
    try {
      this.sink(chunk);
    } catch (error) {
      this.error ??= error instanceof Error ? error : new Error(String(error));
      this.gunzip.destroy();
    }
  }

  get stopped(): boolean {
    return this.overLimit || this.error !== undefined || this.gunzip.destroyed;
  }

  /** Inflates one compressed chunk; resolves once it has been consumed (or inflation stopped). */
  write(chunk: Uint8Array): Promise<void> {
    if (this.stopped) return RESOLVED;
    const written = new Promise<void>((resolve) => {
      this.gunzip.write(chunk, () => resolve());
    });
    return Promise.race([written, this.closed]);
  }

  /** Flushes the end of the stream; resolves when everything is inflated or inflation stopped. */
  end(): Promise<void> {
    if (this.stopped) return RESOLVED;
    this.gunzip.end();
    return this.ended;
  }

  /** Stops inflating (abort). */
  destroy(): void {
    this.gunzip.destroy();
  }
}
