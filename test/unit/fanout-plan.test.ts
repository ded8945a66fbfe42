import { describe, expect, it } from "vitest";
import {
  DEFAULT_FANOUT_RANGE_BYTES,
  DEFAULT_FANOUT_THRESHOLD,
  type FanoutPlan,
  FanoutPlanError,
  MAX_RANGES,
  planRanges,
  S3_MAX_OBJECT_BYTES,
  S3_MAX_PARTS,
  shouldFanOut,
} from "../../functions/core/fanout/plan.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

/** The invariants every plan keeps, whatever its input. */
function expectWellFormed(plan: FanoutPlan): void {
  let offset = 0;
  let part = 1;
  for (const [i, r] of plan.ranges.entries()) {
    expect(r.index).toBe(i);
    expect(r.offset).toBe(offset);
    expect(r.firstPart).toBe(part);
    expect(r.lastPart - r.firstPart + 1).toBe(Math.ceil(r.length / plan.partSize));
    // Every range but the last is whole parts; only the image's last part may be short.
    if (i < plan.ranges.length - 1) expect(r.length).toBe(plan.rangeBytes);
    offset += r.length;
    part = r.lastPart + 1;
  }
  expect(offset).toBe(plan.virtualSize);
  expect(plan.partsTotal).toBe(part - 1);
  expect(plan.partsTotal).toBeLessThanOrEqual(S3_MAX_PARTS);
  expect(plan.ranges.length).toBeLessThanOrEqual(MAX_RANGES);
  expect(plan.rangeBytes % plan.partSize).toBe(0);
}

describe("fan-out range plan", () => {
  it.each([
    // virtual size, range, part → ranges, parts, part size and range size used
    {
      v: 1 * GiB,
      range: 256 * MiB,
      part: 8 * MiB,
      ranges: 4,
      parts: 128,
      partSize: 8 * MiB,
      rangeBytes: 256 * MiB,
    },
    {
      v: 1 * GiB + 1,
      range: 256 * MiB,
      part: 8 * MiB,
      ranges: 5,
      parts: 129,
      partSize: 8 * MiB,
      rangeBytes: 256 * MiB,
    },
    {
      v: 5 * MiB,
      range: 8 * MiB,
      part: 8 * MiB,
      ranges: 1,
      parts: 1,
      partSize: 8 * MiB,
      rangeBytes: 8 * MiB,
    },
    {
      v: 100 * GiB,
      range: 4 * GiB,
      part: 8 * MiB,
      ranges: 25,
      parts: 6400,
      partSize: 16 * MiB,
      rangeBytes: 4 * GiB,
    },
    // exactly 10,000 parts of 8 MiB: no growth
    {
      v: 10_000 * 8 * MiB,
      range: 8 * GiB,
      part: 8 * MiB,
      ranges: 10,
      parts: 10_000,
      partSize: 8 * MiB,
      rangeBytes: 8 * GiB,
    },
    // one byte more: the parts double, the 8 GiB ranges stay (a multiple of 16 MiB)
    {
      v: 10_000 * 8 * MiB + 1,
      range: 8 * GiB,
      part: 8 * MiB,
      ranges: 10,
      parts: 5001,
      partSize: 16 * MiB,
      rangeBytes: 8 * GiB,
    },
    // parts grow to 24 MiB; 40 MiB ranges are no multiple of it (48 MiB);
    // at most 1000 ranges make them 216 MiB
    {
      v: 200 * GiB,
      range: 40 * MiB,
      part: 8 * MiB,
      ranges: 949,
      parts: 8534,
      partSize: 24 * MiB,
      rangeBytes: 216 * MiB,
    },
    // S3's largest object: 528 MiB parts (66 × 8 MiB), ranges of ten of them
    {
      v: 5 * TiB,
      range: 4 * GiB,
      part: 8 * MiB,
      ranges: 993,
      parts: 9930,
      partSize: 528 * MiB,
      rangeBytes: 5280 * MiB,
    },
  ])(
    "$v bytes in $range-byte ranges of $part-byte parts",
    ({ v, range, part, ranges, parts, partSize, rangeBytes }) => {
      const plan = planRanges({ virtualSize: v, rangeBytes: range, partSize: part });
      expect({
        ranges: plan.ranges.length,
        parts: plan.partsTotal,
        partSize: plan.partSize,
        rangeBytes: plan.rangeBytes,
      }).toEqual({
        ranges,
        parts,
        partSize,
        rangeBytes,
      });
      expectWellFormed(plan);
    },
  );

  it("numbers the parts of a small plan exactly", () => {
    expect(planRanges({ virtualSize: 40 * MiB + 3, rangeBytes: 16 * MiB, partSize: 8 * MiB }).ranges).toEqual(
      [
        { index: 0, offset: 0, length: 16 * MiB, firstPart: 1, lastPart: 2 },
        { index: 1, offset: 16 * MiB, length: 16 * MiB, firstPart: 3, lastPart: 4 },
        { index: 2, offset: 32 * MiB, length: 8 * MiB + 3, firstPart: 5, lastPart: 6 },
      ],
    );
  });

  it("keeps its invariants over many sizes", () => {
    for (let v = 1; v <= S3_MAX_OBJECT_BYTES; v = Math.ceil(v * 2.7 + 12_345)) {
      expectWellFormed(planRanges({ virtualSize: v, rangeBytes: 64 * MiB, partSize: 8 * MiB }));
    }
  });

  it.each([
    {
      v: S3_MAX_OBJECT_BYTES + 1,
      range: 4 * GiB,
      part: 8 * MiB,
      reason: "FANOUT_TOO_LARGE",
      message: /exceeds S3's largest object/,
    },
    {
      v: 1 * GiB,
      range: 4 * MiB,
      part: 4 * MiB,
      reason: "FANOUT_INVALID_INPUT",
      message: /outside S3's 5 MiB to 5 GiB/,
    },
    {
      v: 1 * GiB,
      range: 12 * MiB,
      part: 8 * MiB,
      reason: "FANOUT_INVALID_INPUT",
      message: /multiple of the part size/,
    },
    { v: 0, range: 8 * MiB, part: 8 * MiB, reason: "FANOUT_INVALID_INPUT", message: /empty image/ },
    {
      v: 1.5,
      range: 8 * MiB,
      part: 8 * MiB,
      reason: "FANOUT_INVALID_INPUT",
      message: /Invalid virtual size/,
    },
  ])(
    "refuses $v bytes in $range-byte ranges of $part-byte parts ($reason)",
    ({ v, range, part, reason, message }) => {
      const error = (() => {
        try {
          planRanges({ virtualSize: v, rangeBytes: range, partSize: part });
        } catch (e) {
          return e;
        }
      })();
      expect(error).toBeInstanceOf(FanoutPlanError);
      expect((error as FanoutPlanError).reason).toBe(reason);
      expect((error as FanoutPlanError).message).toMatch(message);
    },
  );

  it("fans out above the threshold only", () => {
    expect(shouldFanOut(DEFAULT_FANOUT_THRESHOLD, DEFAULT_FANOUT_THRESHOLD)).toBe(false);
    expect(shouldFanOut(DEFAULT_FANOUT_THRESHOLD + 1, DEFAULT_FANOUT_THRESHOLD)).toBe(true);
    expect(shouldFanOut(1, 0)).toBe(true);
  });

  it("has defaults that follow the measured rate and S3's rules", () => {
    // 1 GiB in 16.56 s (the slowest import measured), 900 s, margin 2, rounded down to whole GiB.
    expect(DEFAULT_FANOUT_THRESHOLD).toBe(Math.floor(((GiB / 16.56) * 900) / 2 / GiB) * GiB);
    expect(DEFAULT_FANOUT_RANGE_BYTES % (8 * MiB)).toBe(0);
    expect(DEFAULT_FANOUT_RANGE_BYTES % (16 * MiB)).toBe(0);
  });
});
