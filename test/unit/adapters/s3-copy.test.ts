import { describe, expect, it } from "vitest";
import { copyParts } from "../../../functions/adapters/s3/copy.ts";
import { GIB, MAX_PART_SIZE, MAX_PARTS, MIB, MIN_PART_SIZE } from "../../../functions/core/uploads/plan.ts";

/** The parts cover [0, size) once, in order, each within S3's part limits. */
function expectValid(size: number) {
  const parts = copyParts(size);
  expect(parts).toBeDefined();
  if (!parts) return;
  expect(parts.length).toBeLessThanOrEqual(MAX_PARTS);
  let next = 0;
  parts.forEach((p, i) => {
    expect(p.partNumber).toBe(i + 1);
    expect(p.first).toBe(next);
    const length = p.last - p.first + 1;
    expect(length).toBeLessThanOrEqual(MAX_PART_SIZE);
    if (i < parts.length - 1) expect(length).toBeGreaterThanOrEqual(MIN_PART_SIZE);
    expect(length).toBeGreaterThan(0);
    next = p.last + 1;
  });
  expect(next).toBe(size);
}

describe("copyParts", () => {
  it("copies up to 5 GiB in one request", () => {
    expect(copyParts(1)).toBeUndefined();
    expect(copyParts(5 * GIB - 1)).toBeUndefined();
    expect(copyParts(5 * GIB)).toBeUndefined();
  });

  it("splits anything larger into ranges within S3's limits", () => {
    for (const size of [5 * GIB + 1, 5 * GIB + 512 * MIB, 5 * GIB + 512 * MIB + 1, 6 * GIB, 100 * GIB + 7]) {
      expectValid(size);
    }
    expect(copyParts(5 * GIB + 1)?.map((p) => p.last - p.first + 1)).toEqual([
      ...Array(10).fill(512 * MIB),
      1,
    ]);
  });

  it("grows its parts so that 5 TiB, S3's largest object, fits in 10,000", () => {
    const size = 5 * 1024 * GIB;
    expectValid(size);
    expect(copyParts(size)?.length).toBeLessThanOrEqual(MAX_PARTS);
  });
});
