/**
 * Child process of the benchmark: converts one image to raw, writes the dense output to a file,
 * and prints its own timing and peak RSS as JSON. Bundled by bench/run.ts (as CommonJS) so Node starts
 * it without a TypeScript loader, like qemu-img starts without one.
 */
import { writeSync } from "node:fs";
import { open } from "node:fs/promises";
import { convertToRaw, type SourceFormat } from "../functions/core/convert/index.ts";
import type { RangeReader, SequentialSource } from "../functions/core/convert/ports.ts";

// One async function rather than top-level await, so that it bundles as CommonJS: Node starts a
// CommonJS file about 0.1 s sooner than an ES module here, and start-up is part of what is timed.
async function main(): Promise<void> {
  const [format, input, output, mode = "range"] = process.argv.slice(2);
  if (!format || !input || !output)
    throw new Error("usage: convert-child <format> <input> <output> [range|sequential]");

  const started = performance.now();
  const handle = await open(input, "r");
  const size = (await handle.stat()).size;
  const range: RangeReader = {
    size,
    async read(offset, length, _signal, into) {
      // Uninitialised: pread fills every byte, and zero-filling 8 MiB windows would cost CPU for nothing.
      const buf = into ?? Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) throw new Error("short read");
        done += bytesRead;
      }
      return buf;
    },
  };
  const sequential: SequentialSource = {
    async *stream() {
      const h = await open(input, "r");
      try {
        for (;;) {
          const buf = Buffer.allocUnsafe(8 << 20);
          const { bytesRead } = await h.read(buf, 0, buf.length, null);
          if (bytesRead === 0) return;
          yield buf.subarray(0, bytesRead);
        }
      } finally {
        await h.close();
      }
    },
  };
  const out = await open(output, "w");
  if (process.env.TRUNC) await out.truncate(Number(process.env.TRUNC));
  const recycle = process.env.BENCH_RECYCLE !== "0";
  const CHUNK = Number(process.env.BENCH_CHUNK ?? 4 << 20);
  // One synchronous positional write at a time, in guest order, as qemu-img writes by default.
  // Writes to one file take its inode lock in turn: with two asynchronous writes in flight, the second
  // spun on that lock (7.5 % of the process's samples under perf) and every write made a round trip
  // through libuv's pool. The pool still reads ahead while the main thread writes.
  let bytes = 0;
  for await (const chunk of convertToRaw(
    format as SourceFormat,
    mode === "sequential" ? { range, sequential } : { range },
    {
      chunkSize: CHUNK,
      windowSize: Number(process.env.BENCH_WINDOW ?? 8 << 20),
      readAhead: Number(process.env.BENCH_READ_AHEAD ?? 3),
      ...(process.env.BENCH_DECODE_AHEAD ? { decodeAhead: Number(process.env.BENCH_DECODE_AHEAD) } : {}),
      // Buffers are reused: each chunk is written before the next is asked for.
      recycle,
    },
  )) {
    let done = 0;
    while (done < chunk.length) done += writeSync(out.fd, chunk, done, chunk.length - done, bytes + done);
    bytes += chunk.length;
  }
  await out.close();
  await handle.close();
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(`${JSON.stringify({ seconds, bytes, maxRssKiB: process.resourceUsage().maxRSS })}\n`);
}

void main();
