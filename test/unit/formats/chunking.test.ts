import { beforeAll, describe, expect, it } from "vitest";
import { type CorpusImage, generateCorpus } from "../../fixtures/generate-formats.ts";
import { readBytes } from "../../fixtures/generate-tools.ts";
import { generateHostileCorpus, type HostileImage } from "../../fixtures/hostile/build-hostile.ts";
import { inspectBytes } from "./helpers.ts";

let corpus: CorpusImage[] = [];
let hostile: HostileImage[] = [];
beforeAll(() => {
  corpus = generateCorpus();
  hostile = generateHostileCorpus();
}, 120_000);

/**
 * Byte-at-a-time costs one await per byte (and, for gzip, one zlib round trip per byte): kept to
 * images this small.
 */
const ONE_BYTE_LIMIT = 160 * 1024;
const ONE_BYTE_GZIP_LIMIT = 24 * 1024;

function smallEnough(bytes: Uint8Array): boolean {
  const gzip = bytes[0] === 0x1f && bytes[1] === 0x8b;
  return bytes.length <= (gzip ? ONE_BYTE_GZIP_LIMIT : ONE_BYTE_LIMIT);
}

function outcome(run: Awaited<ReturnType<typeof inspectBytes>>): unknown {
  if (run.error === undefined) return run.result;
  const error = run.error as Error & { check?: string; format?: string };
  return { error: error.name, check: error.check, format: error.format, message: error.message };
}

describe("chunk boundaries do not change the verdict", () => {
  it("gives identical results for 511-byte and 8 MiB chunks on every image", async () => {
    const all = [...corpus.map((i) => ({ path: i.path, options: {} })), ...hostile];
    for (const image of all) {
      const bytes = readBytes(image.path);
      const big = outcome(await inspectBytes(bytes, 8 * 1024 * 1024, image.options));
      const small = outcome(await inspectBytes(bytes, 511, image.options));
      expect({ image: image.path, small }).toEqual({ image: image.path, small: big });
    }
  }, 240_000);

  it("gives identical results one byte at a time on small images", async () => {
    const small = [...corpus.map((i) => ({ path: i.path, options: {} })), ...hostile].filter((i) =>
      smallEnough(readBytes(i.path)),
    );
    expect(small.length).toBeGreaterThan(10);
    for (const image of small) {
      const bytes = readBytes(image.path);
      const whole = outcome(await inspectBytes(bytes, bytes.length || 1, image.options));
      const single = outcome(await inspectBytes(bytes, 1, image.options));
      expect({ image: image.path, single }).toEqual({ image: image.path, single: whole });
    }
  }, 240_000);
});
