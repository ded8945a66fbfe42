import { existsSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Extent } from "../../../functions/core/convert/disk-map.ts";
import {
  convertRangeToRaw,
  convertToRaw,
  NeedsRangedReads,
  openDiskMap,
  rawOutputSize,
  type SourceFormat,
  UnsupportedImageError,
} from "../../../functions/core/convert/index.ts";
import type { ConvertOptions } from "../../../functions/core/convert/to-raw.ts";
import { baseRaw, FIXTURES, fileRange, makeImage, memoryRange, qemuImg, qemuRawSha256 } from "./helpers.ts";

const K = 1024;
const M = K * K;

const CASES: { name: string; format: SourceFormat; qemu: string; options?: string[]; extra?: string[] }[] = [
  { name: "v3-64k.qcow2", format: "qcow2", qemu: "qcow2", options: ["compat=1.1"] },
  { name: "v2-64k.qcow2", format: "qcow2", qemu: "qcow2", options: ["compat=0.10"] },
  { name: "v3-512.qcow2", format: "qcow2", qemu: "qcow2", options: ["compat=1.1", "cluster_size=512"] },
  { name: "v2-2m.qcow2", format: "qcow2", qemu: "qcow2", options: ["compat=0.10", "cluster_size=2M"] },
  { name: "v3-64k-c.qcow2", format: "qcow2", qemu: "qcow2", options: ["compat=1.1"], extra: ["-c"] },
  {
    name: "v2-4k-c.qcow2",
    format: "qcow2",
    qemu: "qcow2",
    options: ["compat=0.10", "cluster_size=4096"],
    extra: ["-c"],
  },
  {
    name: "v3-64k-zstd.qcow2",
    format: "qcow2",
    qemu: "qcow2",
    options: ["compat=1.1", "compression_type=zstd"],
    extra: ["-c"],
  },
  {
    name: "v3-2m-zstd.qcow2",
    format: "qcow2",
    qemu: "qcow2",
    options: ["compat=1.1", "cluster_size=2M", "compression_type=zstd"],
    extra: ["-c"],
  },
  { name: "sparse.vmdk", format: "vmdk", qemu: "vmdk", options: ["subformat=monolithicSparse"] },
  { name: "stream.vmdk", format: "vmdk", qemu: "vmdk", options: ["subformat=streamOptimized"] },
  { name: "dynamic.vhd", format: "vhd", qemu: "vpc", options: ["subformat=dynamic"] },
  { name: "fixed.vhd", format: "vhd", qemu: "vpc", options: ["subformat=fixed"] },
  { name: "dynamic.vhdx", format: "vhdx", qemu: "vhdx", options: ["subformat=dynamic", "block_size=1M"] },
  { name: "dynamic-32m.vhdx", format: "vhdx", qemu: "vhdx", options: ["subformat=dynamic"] },
  { name: "fixed.vhdx", format: "vhdx", qemu: "vhdx", options: ["subformat=fixed"] },
  { name: "dynamic.vdi", format: "vdi", qemu: "vdi" },
  { name: "static.vdi", format: "vdi", qemu: "vdi", options: ["static=on"] },
];

/** The image of a case (qemu-img's conversion of the base disk; the base disk itself for raw). */
function image(c: (typeof CASES)[number]): { path: string; expected: Uint8Array } {
  const path = makeImage(c.name, c.qemu, c.options, c.extra);
  qemuRawSha256(path, c.qemu);
  return { path, expected: readFileSync(`${path}.qemu.raw`) };
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(new Uint8Array(c));
  return Buffer.concat(parts);
}

/** Cut points: uneven ranges on 1 MiB bounds, and ranges that start and end anywhere. */
function cuts(size: number): { aligned: number[]; unaligned: number[] } {
  const aligned = [0, M, 3 * M, 4 * M, 6 * M, size].filter((c) => c <= size);
  const unaligned = [0, 1, 100_000, M + 4097, 2 * M + 65_535, 3 * M + 512, 5 * M + 12_345, size - 700, size];
  return { aligned, unaligned };
}

/** Converts every range between consecutive cut points and concatenates the outputs. */
async function byRanges(
  format: SourceFormat,
  path: string,
  points: number[],
  opts: ConvertOptions = {},
): Promise<Uint8Array> {
  const range = await fileRange(path);
  try {
    const parts: Uint8Array[] = [];
    for (let i = 0; i + 1 < points.length; i++) {
      const start = points[i] as number;
      const end = points[i + 1] as number;
      const out = await collect(convertRangeToRaw(format, { range }, { start, end }, opts));
      expect(out.length).toBe(end - start);
      parts.push(out);
    }
    return Buffer.concat(parts);
  } finally {
    await range.close();
  }
}

describe("one range → raw, for every format", { timeout: 120_000 }, () => {
  for (const c of CASES) {
    it(`${c.name}: ranges concatenated give qemu-img's and convertToRaw's output`, async () => {
      const { path, expected } = image(c);
      const range = await fileRange(path);
      try {
        expect(Buffer.compare(await collect(convertToRaw(c.format, { range })), expected)).toBe(0);
      } finally {
        await range.close();
      }
      const { aligned, unaligned } = cuts(expected.length);
      expect(Buffer.compare(await byRanges(c.format, path, aligned), expected)).toBe(0);
      // Small windows and chunks: a range's reads are split and coalesced as a whole image's are.
      const small = { windowSize: 96 * K, chunkSize: 40 * K, maxGap: 4 * K };
      expect(Buffer.compare(await byRanges(c.format, path, unaligned, small), expected)).toBe(0);
    });
  }

  it("base.raw (a raw upload)", async () => {
    const path = baseRaw();
    const expected = readFileSync(path);
    const { aligned, unaligned } = cuts(expected.length);
    expect(Buffer.compare(await byRanges("raw", path, aligned), expected)).toBe(0);
    expect(Buffer.compare(await byRanges("raw", path, unaligned), expected)).toBe(0);
  });
});

describe("any range, with any read sizes, is that stretch of the whole", { timeout: 120_000 }, () => {
  for (const name of ["v2-4k-c.qcow2", "v3-64k-zstd.qcow2", "stream.vmdk", "dynamic.vhd", "dynamic.vhdx"]) {
    it(name, async () => {
      const c = CASES.find((x) => x.name === name) as (typeof CASES)[number];
      const { path, expected } = image(c);
      const range = memoryRange(readFileSync(path));
      await fc.assert(
        fc.asyncProperty(
          fc.nat(expected.length),
          fc.nat(expected.length),
          fc.record({
            chunkSize: fc.integer({ min: 4 << 10, max: 3 << 20 }),
            windowSize: fc.integer({ min: 512, max: 16 << 20 }),
            readAhead: fc.integer({ min: 1, max: 5 }),
            maxGap: fc.integer({ min: 0, max: 1 << 20 }),
            decodeAhead: fc.integer({ min: 1, max: 8 << 20 }),
          }),
          async (a, b, opts) => {
            const [start, end] = a <= b ? [a, b] : [b, a];
            const out = await collect(convertRangeToRaw(c.format, { range }, { start, end }, opts));
            expect(Buffer.compare(out, expected.subarray(start, end))).toBe(0);
          },
        ),
        { numRuns: 15 },
      );
    });
  }
});

/** The guest offsets at which an encoded extent of `format`'s map begins and ends. */
async function encodedExtents(format: SourceFormat, path: string): Promise<[number, number][]> {
  const range = await fileRange(path);
  try {
    const map = await openDiskMap(format, range);
    const out: [number, number][] = [];
    let at = 0;
    for await (const batch of map.batches()) {
      for (const e of batch as Extent[]) {
        if (e.kind === "encoded") out.push([at, at + e.length]);
        at += e.length;
      }
    }
    return out;
  } finally {
    await range.close();
  }
}

describe("ranges that cut a compressed cluster", { timeout: 60_000 }, () => {
  for (const name of ["v3-64k-c.qcow2", "v3-64k-zstd.qcow2", "v3-2m-zstd.qcow2"]) {
    it(`${name}: a range starting and one ending inside a compressed cluster`, async () => {
      const c = CASES.find((x) => x.name === name) as (typeof CASES)[number];
      const { path, expected } = image(c);
      const encoded = await encodedExtents("qcow2", path);
      // The text at 5 MiB compresses: pick a cluster there and cut it at a third and two thirds.
      const cluster = encoded.find(([s, e]) => s <= 5 * M + 12_345 && 5 * M + 12_345 < e);
      expect(cluster).toBeDefined();
      const [s, e] = cluster as [number, number];
      const a = s + Math.floor((e - s) / 3);
      const b = s + Math.floor((2 * (e - s)) / 3);
      const range = await fileRange(path);
      try {
        for (const [start, end] of [
          [a, b],
          [a, Math.min(e + 5000, expected.length)],
          [s - 3000, b],
          [a, a + 1],
        ] as const) {
          const out = await collect(convertRangeToRaw("qcow2", { range }, { start, end }));
          expect(Buffer.compare(out, expected.subarray(start, end))).toBe(0);
        }
      } finally {
        await range.close();
      }
    });
  }
});

describe("range bounds and refusals", { timeout: 60_000 }, () => {
  const c = CASES[0] as (typeof CASES)[number];

  it("an empty range produces nothing, anywhere up to the end", async () => {
    const { path, expected } = image(c);
    const range = await fileRange(path);
    try {
      for (const at of [0, 2 * M + 7, expected.length]) {
        expect((await collect(convertRangeToRaw("qcow2", { range }, { start: at, end: at }))).length).toBe(0);
      }
    } finally {
      await range.close();
    }
  });

  it("a range past the end is refused before any byte", async () => {
    const { path, expected } = image(c);
    const range = await fileRange(path);
    try {
      for (const [start, end] of [
        [0, expected.length + 1],
        [expected.length, expected.length + M],
        [expected.length + M, expected.length + 2 * M],
      ] as const) {
        const err = await collect(convertRangeToRaw("qcow2", { range }, { start, end })).catch((e) => e);
        expect(err).toBeInstanceOf(RangeError);
        expect(String(err)).toMatch(new RegExp(`past the image's virtual size of ${expected.length} bytes`));
      }
    } finally {
      await range.close();
    }
  });

  it("a malformed range is refused", async () => {
    const { path } = image(c);
    const range = await fileRange(path);
    try {
      for (const [start, end] of [
        [-1, 10],
        [20, 10],
        [0.5, 10],
        [0, Number.NaN],
      ] as const) {
        const err = await collect(convertRangeToRaw("qcow2", { range }, { start, end })).catch((e) => e);
        expect(err).toBeInstanceOf(RangeError);
        expect(String(err)).toMatch(/invalid guest range/);
      }
    } finally {
      await range.close();
    }
  });

  it("needs ranged reads", async () => {
    const err = await collect(
      convertRangeToRaw("qcow2", { sequential: { stream: async function* () {} } }, { start: 0, end: 1 }),
    ).catch((e) => e);
    expect(err).toBeInstanceOf(NeedsRangedReads);
  });

  it("a qcow2 with a backing file is refused, as by convertToRaw", async () => {
    const base = makeImage("v3-64k.qcow2", "qcow2", ["compat=1.1"]);
    const path = join(FIXTURES, "overlay.qcow2");
    if (!existsSync(path)) {
      qemuImg("create", "-f", "qcow2", "-F", "qcow2", "-b", base, `${path}.${process.pid}.tmp`, "1M");
      renameSync(`${path}.${process.pid}.tmp`, path);
    }
    const range = await fileRange(path);
    try {
      const err = await collect(convertRangeToRaw("qcow2", { range }, { start: 0, end: 4096 })).catch(
        (e) => e,
      );
      expect(err).toBeInstanceOf(UnsupportedImageError);
      expect(String(err)).toMatch(/backing file/);
    } finally {
      await range.close();
    }
  });

  it("rawOutputSize gives the virtual size and applies the size limit", async () => {
    const { path, expected } = image(c);
    const range = await fileRange(path);
    try {
      expect(await rawOutputSize("qcow2", range)).toBe(expected.length);
      await expect(rawOutputSize("qcow2", range, { maxVirtualSize: M })).rejects.toThrow(/virtual size/);
    } finally {
      await range.close();
    }
  });
});
