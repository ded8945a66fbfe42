import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  CaptureBudget,
  HEAD_BYTES,
  MAX_CAPTURE_BYTES,
  StreamLayer,
  TAIL_BYTES,
} from "../../../functions/core/formats/capture.ts";
import { MalformedImageError } from "../../../functions/core/formats/errors.ts";

function pseudo(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return out;
}

/** Byte equality without vitest's element-by-element diffing (slow on megabytes). */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  );
}

function feed(layer: StreamLayer, bytes: Uint8Array, cuts: number[]): void {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let from = 0;
  for (const to of [...points, bytes.length]) {
    if (to > from) layer.push(bytes.subarray(from, to));
    layer.releaseChunk();
    from = Math.max(from, to);
  }
  layer.end();
}

describe("StreamLayer", () => {
  it("captures regions, head and tail exactly, whatever the chunking", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: HEAD_BYTES + 3 * TAIL_BYTES }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.array(fc.tuple(fc.nat(), fc.nat(3 * TAIL_BYTES)), { maxLength: 5 }),
        (length, cuts, wanted) => {
          const bytes = pseudo(length, length);
          const layer = new StreamLayer(new CaptureBudget());
          const regions = wanted.map(([offset, size]) => {
            const start = offset % (length + 1);
            return { start, size, region: layer.request(start, size, "test", "region") };
          });
          feed(layer, bytes, cuts);
          expect(layer.position).toBe(length);
          expect(same(layer.head(), bytes.subarray(0, Math.min(length, HEAD_BYTES)))).toBe(true);
          expect(same(layer.tail(), bytes.subarray(Math.max(0, length - TAIL_BYTES)))).toBe(true);
          for (const { start, size, region } of regions) {
            expect(region.complete).toBe(start + size <= length);
            if (region.complete) expect(same(region.data, bytes.subarray(start, start + size))).toBe(true);
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it("fills a late region from the head or the chunk just pushed, and marks anything older missed", () => {
    const bytes = pseudo(HEAD_BYTES + 200_000, 3);
    const layer = new StreamLayer(new CaptureBudget());
    layer.push(bytes.subarray(0, HEAD_BYTES + 100_000));
    const inHead = layer.request(100, 50, "test", "in head");
    const inChunk = layer.request(HEAD_BYTES + 10, 50_000, "test", "in last chunk");
    const straddling = layer.request(HEAD_BYTES + 90_000, 20_000, "test", "straddles");
    layer.releaseChunk();
    const gone = layer.request(HEAD_BYTES + 20, 10, "test", "passed");
    layer.push(bytes.subarray(HEAD_BYTES + 100_000));
    layer.releaseChunk();
    layer.end();
    expect(same(inHead.data, bytes.subarray(100, 150))).toBe(true);
    expect(same(inChunk.data, bytes.subarray(HEAD_BYTES + 10, HEAD_BYTES + 50_010))).toBe(true);
    expect(same(straddling.data, bytes.subarray(HEAD_BYTES + 90_000, HEAD_BYTES + 110_000))).toBe(true);
    expect(gone.missed).toBe(true);
    expect(gone.complete).toBe(false);
  });

  it("refuses regions beyond the capture budget", () => {
    const budget = new CaptureBudget();
    const layer = new StreamLayer(budget);
    expect(() => layer.request(HEAD_BYTES, MAX_CAPTURE_BYTES, "test", "huge table")).toThrow(
      MalformedImageError,
    );
    expect(budget.peak).toBeLessThanOrEqual(MAX_CAPTURE_BYTES);
  });
});
