import { beforeAll, describe, expect, it } from "vitest";
import { inspectRanges, type RangeReader } from "../../../functions/core/formats/index.ts";
import { type CorpusImage, generateCorpus } from "../../fixtures/generate-formats.ts";
import { readBytes } from "../../fixtures/generate-tools.ts";
import { generateHostileCorpus, type HostileImage } from "../../fixtures/hostile/build-hostile.ts";
import { inspectBytes, TEST_LIMITS } from "./helpers.ts";

let corpus: CorpusImage[] = [];
let hostile: HostileImage[] = [];
beforeAll(() => {
  corpus = generateCorpus();
  hostile = generateHostileCorpus();
}, 120_000);

/** A reader over `bytes` that records every range read. */
function recordingReader(bytes: Uint8Array): RangeReader & { ranges: [number, number][] } {
  const ranges: [number, number][] = [];
  return {
    size: bytes.length,
    ranges,
    async read(offset, length) {
      ranges.push([offset, length]);
      return bytes.slice(offset, offset + length);
    },
  };
}

function outcome(run: { result?: unknown; error?: unknown }): unknown {
  if (run.error === undefined) return run.result;
  const error = run.error as Error & { check?: string; format?: string };
  return { error: error.name, check: error.check, format: error.format, message: error.message };
}

async function byRanges(bytes: Uint8Array, chunk: number, options: object) {
  const reader = recordingReader(bytes);
  try {
    const { result, bytesRead } = await inspectRanges(reader, { ...TEST_LIMITS, ...options }, chunk);
    return { result, bytesRead, ranges: reader.ranges };
  } catch (error) {
    return { error, bytesRead: reader.ranges.reduce((s, [, n]) => s + n, 0), ranges: reader.ranges };
  }
}

describe("inspection by ranges", () => {
  it("gives the verdict of a full stream on every image, safe or hostile", async () => {
    const all = [...corpus.map((i) => ({ path: i.path, options: {} })), ...hostile];
    expect(all.length).toBeGreaterThan(30);
    for (const image of all) {
      const bytes = readBytes(image.path);
      const full = outcome(await inspectBytes(bytes, 64 * 1024, image.options ?? {}));
      const sparse = outcome(await byRanges(bytes, 64 * 1024, image.options ?? {}));
      expect({ image: image.path, sparse }).toEqual({ image: image.path, sparse: full });
    }
  }, 240_000);

  it("reads the head, the regions a header points at and the tail, not the whole of a large image", async () => {
    const big = corpus
      .filter((i) => i.compression === "none" && i.size >= 4 * 1024 * 1024)
      .map((i) => ({ image: i, bytes: readBytes(i.path) }));
    expect(big.length).toBeGreaterThan(3);
    for (const { image, bytes } of big) {
      const run = await byRanges(bytes, 64 * 1024, {});
      expect({ image: image.name, read: run.bytesRead < bytes.length / 2 }).toEqual({
        image: image.name,
        read: true,
      });
      // The first range is the head, the last one ends at the end of the object.
      expect(run.ranges[0]?.[0]).toBe(0);
      const last = run.ranges.at(-1) ?? [0, 0];
      expect(last[0] + last[1]).toBe(bytes.length);
    }
  }, 120_000);

  it("reads every byte of a gzip upload (inflation cannot skip)", async () => {
    const gz = corpus.find((i) => i.compression === "gzip");
    expect(gz).toBeDefined();
    const bytes = readBytes((gz as CorpusImage).path);
    const run = await byRanges(bytes, 4096, {});
    expect(run.bytesRead).toBe(bytes.length);
  });
});
