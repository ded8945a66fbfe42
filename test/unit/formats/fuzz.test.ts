import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import {
  detectFormat,
  MAX_CAPTURE_BYTES,
  MalformedImageError,
  UnsafeImageError,
  UnsupportedFormatError,
} from "../../../functions/core/formats/index.ts";
import { generateCorpus } from "../../fixtures/generate-formats.ts";
import { readBytes } from "../../fixtures/generate-tools.ts";
import { generateHostileCorpus } from "../../fixtures/hostile/build-hostile.ts";
import { inspectBytes } from "./helpers.ts";

/** Seeds small enough that hundreds of runs stay within a few seconds on two cores. */
const SEED_LIMIT = 320 * 1024;
/** No single inspection of a seed-sized input may take longer than this (a hang shows up as a failure). */
const TIME_BOUND_MS = 3000;

let seeds: Uint8Array[] = [];
beforeAll(() => {
  const paths = [...generateCorpus().map((i) => i.path), ...generateHostileCorpus().map((i) => i.path)];
  seeds = paths.map(readBytes).filter((b) => b.length > 0 && b.length <= SEED_LIMIT);
}, 120_000);

/**
 * Typed, and not a bug in disguise: the inspector fails closed on any unexpected exception (it
 * becomes `malformed header`), so the cause is checked too. Only parser errors and zlib's own
 * errors may be behind a refusal.
 */
function isTyped(error: unknown): boolean {
  if (error instanceof UnsupportedFormatError) return true;
  if (!(error instanceof UnsafeImageError)) return false;
  const cause = error.cause;
  return (
    cause === undefined ||
    cause instanceof MalformedImageError ||
    (cause as { code?: string }).code?.startsWith("Z_") === true
  );
}

const mutation = fc.record({
  // Most header fields live in the first 4 KiB or the last 1.5 KiB; hit those hardest.
  where: fc.oneof(
    fc.nat(4095),
    fc.nat(1535).map((n) => -1 - n),
    fc.nat(),
  ),
  value: fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 1 }),
    fc.constantFrom(
      Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
      new Uint8Array(8),
      Uint8Array.of(0x80, 0, 0, 0),
    ),
    fc.uint8Array({ minLength: 2, maxLength: 8 }),
  ),
});

function mutate(
  seed: Uint8Array,
  edits: { where: number; value: Uint8Array }[],
  cut: number | null,
): Uint8Array {
  const bytes = seed.slice(0, cut === null ? seed.length : Math.max(0, Math.min(seed.length, cut)));
  for (const { where, value } of edits) {
    if (bytes.length === 0) break;
    const at = where < 0 ? bytes.length + where : where % bytes.length;
    if (at >= 0) bytes.set(value.subarray(0, Math.max(0, bytes.length - at)), at);
  }
  return bytes;
}

async function expectContained(bytes: Uint8Array, chunk: number): Promise<void> {
  const started = performance.now();
  const run = await inspectBytes(bytes, chunk);
  const elapsed = performance.now() - started;
  if (run.error !== undefined && !isTyped(run.error)) throw run.error;
  expect(run.peakCapturedBytes).toBeLessThanOrEqual(MAX_CAPTURE_BYTES);
  expect(elapsed).toBeLessThan(TIME_BOUND_MS);
  try {
    detectFormat(bytes.subarray(0, 65536), bytes.subarray(Math.max(0, bytes.length - 512)), bytes.length);
  } catch (error) {
    if (!isTyped(error)) throw error;
  }
}

describe("fuzzed headers", () => {
  it("mutated corpus images end in a result or a typed error, within the capture and time bounds", async () => {
    expect(seeds.length).toBeGreaterThan(20);
    await fc.assert(
      fc.asyncProperty(
        fc.nat(),
        fc.array(mutation, { minLength: 1, maxLength: 6 }),
        fc.option(fc.nat(SEED_LIMIT)),
        fc.constantFrom(97, 511, 4096, 65536, 1 << 20),
        async (pick, edits, cut, chunk) => {
          const seed = seeds[pick % seeds.length] as Uint8Array;
          await expectContained(mutate(seed, edits, cut), chunk);
        },
      ),
      { numRuns: 500 },
    );
  }, 120_000);

  it("random bytes behind every known magic end in a result or a typed error", async () => {
    const magics = [
      "QFI\xfb\0\0\0\x03",
      "QFI\xfb\0\0\0\x02",
      "KDMV",
      "COWD",
      "conectix",
      "vhdxfile",
      "LUKS\xba\xbe\0\x01",
      "version=1\n",
      "\x1f\x8b\x08",
      "QED\0",
      "",
    ];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...magics),
        fc.uint8Array({ maxLength: 2048 }),
        fc.integer({ min: 0, max: 300 * 1024 }),
        fc.constantFrom(1, 511, 65536),
        async (magic, header, padding, chunk) => {
          const bytes = new Uint8Array(magic.length + header.length + padding);
          for (let i = 0; i < magic.length; i++) bytes[i] = magic.charCodeAt(i);
          bytes.set(header, magic.length);
          await expectContained(bytes, chunk === 1 && bytes.length > 4096 ? 511 : chunk);
        },
      ),
      { numRuns: 300 },
    );
  }, 120_000);
});
