import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { convertToRaw, gunzipSource, type SourceFormat } from "../../../functions/core/convert/index.ts";
import { digest, fileRange, fileSequential, makeImage, memoryRange, qemuRawSha256 } from "./helpers.ts";

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
