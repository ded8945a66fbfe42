import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  describeParts,
  GIB,
  layoutFor,
  MAX_OBJECT_SIZE,
  MAX_PART_SIZE,
  MAX_PARTS,
  MIB,
  MIN_PART_SIZE,
  partLength,
  partOffset,
  uploadPartSize,
  usesMultipart,
} from "../../../functions/core/uploads/plan.ts";

describe("multipart plan arithmetic", () => {
  it("gives S3-valid parts that add up to the size, for any size up to 5 TiB and any allowed minimum", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: MAX_OBJECT_SIZE }),
        fc.integer({ min: 5, max: 5 * 1024 }).map((m) => m * MIB),
        (size, minPartSize) => {
          const { partSize, partCount } = layoutFor(size, minPartSize);
          expect(partSize % MIB).toBe(0);
          expect(partSize).toBeGreaterThanOrEqual(Math.max(MIN_PART_SIZE, minPartSize));
          expect(partSize).toBeLessThanOrEqual(MAX_PART_SIZE);
          expect(partCount).toBeGreaterThanOrEqual(1);
          expect(partCount).toBeLessThanOrEqual(MAX_PARTS);
          const last = partLength(size, partSize, partCount);
          expect(last).toBeGreaterThan(0);
          expect(last).toBeLessThanOrEqual(partSize);
          expect(partOffset(partSize, partCount) + last).toBe(size);
          if (partCount > 1) expect(partLength(size, partSize, 1)).toBe(partSize);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("keeps the preferred part size while it fits in 10,000 parts, then grows", () => {
    expect(uploadPartSize(2 * GIB)).toBe(16 * MIB);
    expect(uploadPartSize(10_000 * 16 * MIB)).toBe(16 * MIB);
    expect(uploadPartSize(10_000 * 16 * MIB + 1)).toBe(17 * MIB);
    expect(layoutFor(MAX_OBJECT_SIZE).partCount).toBeLessThanOrEqual(MAX_PARTS);
    expect(uploadPartSize(30 * MIB, 5 * MIB)).toBe(5 * MIB);
  });

  it("refuses sizes and minimums outside S3's limits", () => {
    expect(() => uploadPartSize(0)).toThrow(RangeError);
    expect(() => uploadPartSize(MAX_OBJECT_SIZE + 1)).toThrow(RangeError);
    expect(() => uploadPartSize(GIB, 4 * MIB)).toThrow(RangeError);
    expect(() => partLength(10, 5, 3)).toThrow(RangeError);
  });

  it("switches to multipart above the threshold, and always above 5 GiB", () => {
    expect(usesMultipart(64 * MIB, 64 * MIB)).toBe(false);
    expect(usesMultipart(64 * MIB + 1, 64 * MIB)).toBe(true);
    expect(usesMultipart(5 * GIB, 1024 * GIB)).toBe(false);
    expect(usesMultipart(5 * GIB + 1, 1024 * GIB)).toBe(true);
  });

  it("names missing parts as ranges", () => {
    expect(describeParts([7, 1, 2, 3, 9, 10])).toBe("1-3, 7, 9-10");
    expect(describeParts([4])).toBe("4");
  });
});
