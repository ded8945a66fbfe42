/**
 * The part of `node:zlib` the format inspector uses (gzip.ts: `createGunzip`), over the browser's
 * `DecompressionStream`, so the page bundles the importer's inspector unchanged. esbuild aliases
 * `node:zlib` to this file for the page only (scripts/build.mjs).
 *
 * Memory bound: the readable side is drained as it produces, so besides the stream's own window at most
 * one inflated chunk is held.
 */
type Listener = (value?: unknown) => void;

class BrowserGunzip {
  destroyed = false;
  private readonly listeners = new Map<string, { fn: Listener; once: boolean }[]>();
  private readonly writer: WritableStreamDefaultWriter<BufferSource>;
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;

  constructor() {
    const stream = new DecompressionStream("gzip");
    this.writer = stream.writable.getWriter();
    this.reader = stream.readable.getReader();
    void this.pump();
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const { done, value } = await this.reader.read();
        if (done || this.destroyed) break;
        this.emit("data", value);
      }
      if (!this.destroyed) this.emit("end");
    } catch (error) {
      if (!this.destroyed) this.emit("error", error instanceof Error ? error : new Error(String(error)));
    } finally {
      this.close();
    }
  }

  private emit(event: string, value?: unknown): void {
    const list = this.listeners.get(event) ?? [];
    this.listeners.set(
      event,
      list.filter((l) => !l.once),
    );
    for (const l of list) l.fn(value);
  }

  private add(event: string, fn: Listener, once: boolean): this {
    this.listeners.set(event, [...(this.listeners.get(event) ?? []), { fn, once }]);
    return this;
  }

  on(event: string, fn: Listener): this {
    return this.add(event, fn, false);
  }

  once(event: string, fn: Listener): this {
    return this.add(event, fn, true);
  }

  write(chunk: Uint8Array, callback?: () => void): boolean {
    // A copy: the writer keeps the chunk until it is consumed, and the caller may reuse its buffer.
    this.writer.write(chunk.slice()).then(
      () => callback?.(),
      () => callback?.(),
    );
    return true;
  }

  end(): void {
    this.writer.close().catch(() => {});
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.reader.cancel().catch(() => {});
    this.writer.abort().catch(() => {});
    this.close();
  }

  private closed = false;
  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.destroyed = true;
    this.emit("close");
  }
}

export function createGunzip(_options?: unknown): BrowserGunzip {
  return new BrowserGunzip();
}

/** Only the importer's early detection (detect.ts) inflates synchronously; the page never calls it. */
export function gunzipSync(): never {
  throw new Error("gunzipSync is not available in the browser");
}

export const constants = { Z_SYNC_FLUSH: 2 };
