import { createGunzip } from "node:zlib";
import type { SequentialSource } from "./ports.ts";

/**
 * The decompressed bytes of a gzip-wrapped upload, as a sequential source. Use it as
 * `{ sequential: gunzipSource(s) }` (no range reader): conversion then works when the image stores
 * its metadata before the data it maps and data in guest order, as qemu-img writes it; otherwise it
 * fails with NonMonotonicSource. Memory: zlib's 32 KiB window plus a few 1 MiB output chunks.
 */
export function gunzipSource(compressed: SequentialSource): SequentialSource {
  return {
    async *stream(signal?: AbortSignal) {
      const gunzip = createGunzip({ chunkSize: 1 << 20 });
      const input = compressed.stream(signal);
      // A lent chunk goes back once zlib has consumed it (the write's callback).
      const release = compressed.release?.bind(compressed);
      const pump = (async () => {
        try {
          for await (const chunk of input) {
            if (gunzip.destroyed) return;
            if (!gunzip.write(chunk, release && (() => release(chunk)))) {
              await new Promise((resolve) => {
                gunzip.once("drain", resolve);
                gunzip.once("close", resolve);
              });
            }
          }
          gunzip.end();
        } catch (err) {
          gunzip.destroy(err instanceof Error ? err : new Error(String(err)));
        }
      })();
      try {
        for await (const chunk of gunzip) yield chunk as Uint8Array;
        await pump;
      } finally {
        gunzip.destroy();
        await pump;
      }
    },
  };
}
