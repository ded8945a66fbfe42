import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { convertToRaw, gunzipSource, type SourceFormat } from "../../../functions/core/convert/index.ts";
import {
  digest,
  FIXTURES,
  fileRange,
  fileSequential,
  makeImage,
  memoryRange,
  qemuRawSha256,
} from "./helpers.ts";

const IMAGES: { name: string; format: SourceFormat; qemu: string; options: string[]; extra?: string[] }[] = [
  {
    name: "v3-4k-c.qcow2",
    format: "qcow2",
    qemu: "qcow2",
    options: ["compat=1.1", "cluster_size=4096"],
    extra: ["-c"],
  },
  { name: "stream.vmdk", format: "vmdk", qemu: "vmdk", options: ["subformat=streamOptimized"] },
  { name: "dynamic.vhd", format: "vhd", qemu: "vpc", options: ["subformat=dynamic"] },
  { name: "dynamic.vhdx", format: "vhdx", qemu: "vhdx", options: ["subformat=dynamic", "block_size=1M"] },
];

describe("chunk, window, read-ahead and decode-ahead sizes do not change the output", {
  timeout: 120_000,
}, () => {
  for (const img of IMAGES) {
    it(img.name, async () => {
      const path = makeImage(img.name, img.qemu, img.options, img.extra);
      const expected = qemuRawSha256(path, img.qemu);
      const bytes = readFileSync(path);
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            chunkSize: fc.integer({ min: 64 << 10, max: 3 << 20 }),
            windowSize: fc.integer({ min: 512, max: 16 << 20 }),
            readAhead: fc.integer({ min: 1, max: 5 }),
            maxGap: fc.integer({ min: 0, max: 1 << 20 }),
            decodeAhead: fc.integer({ min: 1, max: 8 << 20 }),
            sequentialChunk: fc.option(fc.integer({ min: 1000, max: 3 << 20 }), { nil: undefined }),
          }),
          async ({ sequentialChunk, ...opts }) => {
            const range = memoryRange(bytes);
            const sequential = sequentialChunk ? fileSequential(path, sequentialChunk) : undefined;
            const chunks: number[] = [];
            const sizes = async function* () {
              for await (const c of convertToRaw(img.format, { range, sequential }, opts)) {
                chunks.push(c.length);
                yield c;
              }
            };
            expect(await digest(sizes())).toEqual(expected);
            // Every chunk but the last is between half the chunk size and the chunk size.
            for (const n of chunks.slice(0, -1)) {
              expect(n).toBeLessThanOrEqual(opts.chunkSize);
              expect(n).toBeGreaterThanOrEqual(opts.chunkSize >> 1);
            }
          },
        ),
        { numRuns: 8 },
      );
    });
  }
});

describe("recycled buffers are never refilled while the consumer still holds them", {
  timeout: 120_000,
}, () => {
  for (const img of [
    ...IMAGES,
    { name: "v2-64k.qcow2", format: "qcow2" as const, qemu: "qcow2", options: ["compat=0.10"] },
  ]) {
    it(img.name, async () => {
      const path = makeImage(img.name, img.qemu, img.options, "extra" in img ? img.extra : undefined);
      const expected = qemuRawSha256(path, img.qemu);
      const bytes = readFileSync(path);
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            chunkSize: fc.integer({ min: 64 << 10, max: 2 << 20 }),
            windowSize: fc.integer({ min: 4096, max: 4 << 20 }),
            readAhead: fc.integer({ min: 1, max: 4 }),
            held: fc.integer({ min: 0, max: 4 }),
            sequentialChunk: fc.option(fc.integer({ min: 1000, max: 2 << 20 }), { nil: undefined }),
          }),
          async ({ held, sequentialChunk, ...opts }) => {
            const range = memoryRange(bytes);
            const sequential = sequentialChunk ? fileSequential(path, sequentialChunk) : undefined;
            // Holds the last `held` chunks while asking for the next, as a writer with that many writes
            // in flight would, and checks each is unchanged when it lets go of it.
            const holding: { chunk: Uint8Array; sum: string }[] = [];
            const sum = (c: Uint8Array) => createHash("sha256").update(c).digest("hex");
            const checked = async function* () {
              const recycled = convertToRaw(
                img.format,
                { range, sequential },
                { ...opts, recycle: true, heldBytes: held * opts.chunkSize },
              );
              for await (const c of recycled) {
                holding.push({ chunk: c, sum: sum(c) });
                yield c;
                // About to ask for the next chunk: let go of all but the last `held`, each still intact.
                while (holding.length > held) {
                  const h = holding.shift() as { chunk: Uint8Array; sum: string };
                  expect(sum(h.chunk)).toBe(h.sum);
                }
              }
              for (const h of holding) expect(sum(h.chunk)).toBe(h.sum);
            };
            expect(await digest(checked())).toEqual(expected);
          },
        ),
        { numRuns: 8 },
      );
    });
  }
});

describe("buffers kept for the next conversion are never in use", { timeout: 180_000 }, () => {
  // Window and chunk buffers outlive a conversion (functions/core/buffers.ts): one given back while its
  // consumer still held a chunk of it would be refilled by the next conversion in the same process.
  // Random bytes to its end (a raw image's chunks are views of the windows): what a consumer still
  // holds when a conversion ends is then window bytes, not zeros.
  const randomRaw = join(FIXTURES, "random-end.raw");
  if (!existsSync(randomRaw)) {
    mkdirSync(FIXTURES, { recursive: true });
    writeFileSync(`${randomRaw}.${process.pid}.tmp`, randomBytes(8 * 1024 * 1024 + 25 * 512));
    renameSync(`${randomRaw}.${process.pid}.tmp`, randomRaw);
  }
  const all: { name: string; format: SourceFormat; qemu: string; options: string[]; extra?: string[] }[] = [
    { name: "random-end.raw", format: "raw", qemu: "raw", options: [] },
    ...IMAGES,
    { name: "v2-64k.qcow2", format: "qcow2", qemu: "qcow2", options: ["compat=0.10"] },
  ];
  const sum = (c: Uint8Array) => createHash("sha256").update(c).digest("hex");
  /** Consumes a recycled conversion holding its last `held` chunks; those still held at the end. */
  async function consume(
    img: (typeof all)[number],
    bytes: Uint8Array,
    opts: { chunkSize: number; windowSize: number; readAhead: number },
    held: number,
    expected: { sha256: string; size: number },
  ): Promise<{ chunk: Uint8Array; sum: string }[]> {
    const holding: { chunk: Uint8Array; sum: string }[] = [];
    const hash = createHash("sha256");
    let size = 0;
    const recycled = convertToRaw(
      img.format,
      { range: memoryRange(bytes) },
      { ...opts, recycle: true, heldBytes: held * opts.chunkSize },
    );
    for await (const c of recycled) {
      holding.push({ chunk: c, sum: sum(c) });
      hash.update(c);
      size += c.length;
      // Yields to the other conversion running beside this one before asking for the next chunk.
      await new Promise((resolve) => setImmediate(resolve));
      while (holding.length > held) {
        const h = holding.shift() as { chunk: Uint8Array; sum: string };
        expect(sum(h.chunk)).toBe(h.sum);
      }
    }
    expect({ sha256: hash.digest("hex"), size }).toEqual(expected);
    return holding;
  }
  for (const [i, img] of all.entries()) {
    const other = all[(i + 1) % all.length] as (typeof all)[number];
    it(`${img.name}, then and beside ${other.name}`, async () => {
      const paths = [img, other].map((m) =>
        m.format === "raw" ? join(FIXTURES, m.name) : makeImage(m.name, m.qemu, m.options, m.extra),
      );
      const [wantA, wantB] = [img, other].map((m, k) => qemuRawSha256(paths[k] as string, m.qemu)) as [
        ReturnType<typeof qemuRawSha256>,
        ReturnType<typeof qemuRawSha256>,
      ];
      const [bytesA, bytesB] = paths.map((p) => readFileSync(p)) as [Buffer, Buffer];
      await fc.assert(
        fc.asyncProperty(
          // Windows at least a chunk long, so that chunks are views of windows, not copies.
          fc
            .record({
              chunkSize: fc.integer({ min: 64 << 10, max: 1 << 20 }),
              extra: fc.integer({ min: 0, max: 3 << 20 }),
              readAhead: fc.integer({ min: 1, max: 4 }),
            })
            .map(({ chunkSize, extra, readAhead }) => ({
              chunkSize,
              windowSize: chunkSize + extra,
              readAhead,
            })),
          fc.integer({ min: 1, max: 3 }),
          async (opts, held) => {
            // One after the other: what the first still holds at its end survives the next ones (the
            // same image again reads the same windows in another order).
            const left = await consume(img, bytesA, opts, held, wantA);
            await consume(other, bytesB, opts, held, wantB);
            await consume(img, bytesA, opts, held, wantA);
            for (const h of left) expect(sum(h.chunk)).toBe(h.sum);
            // Side by side, with the same sizes, holding chunks and holding none (a consumer done with
            // each chunk when it asks for the next): each takes and gives back while the other runs.
            for (const h2 of [held, 0]) {
              const both = await Promise.all([
                consume(img, bytesA, opts, h2, wantA),
                consume(other, bytesB, opts, h2, wantB),
              ]);
              for (const h of both.flat()) expect(sum(h.chunk)).toBe(h.sum);
            }
          },
        ),
        // Besides random sizes, one where the chunks held at the end are views of several windows.
        { numRuns: 8, examples: [[{ chunkSize: 64 << 10, windowSize: 1 << 20, readAhead: 2 }, 2]] },
      );
    });
  }
});

describe("gzip-wrapped sources stream when stored in order", { timeout: 60_000 }, () => {
  for (const img of IMAGES.filter((i) => i.format !== "vmdk")) {
    it(img.name, async () => {
      const path = makeImage(img.name, img.qemu, img.options, img.extra);
      const expected = qemuRawSha256(path, img.qemu);
      const gz = gzipSync(readFileSync(path));
      const compressed = {
        stream: async function* () {
          for (let i = 0; i < gz.length; i += 100_000) yield gz.subarray(i, i + 100_000);
        },
      };
      expect(await digest(convertToRaw(img.format, { sequential: gunzipSource(compressed) }))).toEqual(
        expected,
      );
    });
  }
});

describe("file-backed reads are coalesced", () => {
  it("reads a qcow2 of a few MiB in a handful of ranged reads", async () => {
    const path = makeImage("v3-64k.qcow2", "qcow2", ["compat=1.1"]);
    const range = await fileRange(path);
    try {
      const out = await digest(convertToRaw("qcow2", { range }));
      expect(out).toEqual(qemuRawSha256(path, "qcow2"));
      // header, L1, one L2 table, and the data in windows of up to 8 MiB split only by holes
      expect(range.reads).toBeLessThanOrEqual(8);
    } finally {
      await range.close();
    }
  });
});

describe("no single read exceeds the window", () => {
  const FIXED: { name: string; format: SourceFormat; qemu: string; options: string[] }[] = [
    { name: "fixed.vhd", format: "vhd", qemu: "vpc", options: ["subformat=fixed"] },
    { name: "fixed.vhdx", format: "vhdx", qemu: "vhdx", options: ["subformat=fixed"] },
    { name: "static.vdi", format: "vdi", qemu: "vdi", options: ["static=on"] },
  ];
  for (const f of FIXED) {
    it(f.name, async () => {
      const path = makeImage(f.name, f.qemu, f.options);
      const inner = memoryRange(readFileSync(path));
      let largest = 0;
      const range = {
        size: inner.size,
        read(offset: number, length: number) {
          largest = Math.max(largest, length);
          return inner.read(offset, length);
        },
      };
      const windowSize = 1 << 20;
      expect(await digest(convertToRaw(f.format, { range }, { windowSize }))).toEqual(
        qemuRawSha256(path, f.qemu),
      );
      expect(largest).toBeLessThanOrEqual(windowSize);
    });
  }
});
