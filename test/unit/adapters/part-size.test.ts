import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { storedImagePartSize } from "../../../functions/adapters/s3/object-store.ts";
import { partSizeAt } from "../../../functions/adapters/s3/part-writer.ts";

const MiB = 1024 * 1024;

describe("storedImagePartSize", () => {
  it("keeps the configured size for small bodies", () => {
    expect(storedImagePartSize(1024, 8 * MiB)).toBe(8 * MiB);
    expect(storedImagePartSize(undefined, 8 * MiB)).toBe(8 * MiB);
    expect(storedImagePartSize(70 * 1024 * MiB, 8 * MiB)).toBe(8 * MiB);
  });

  it("grows parts so any body up to 5 TiB fits S3's 10,000 parts, in whole MiB", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 * 1024 ** 4 }), fc.constantFrom(5, 8, 16), (hint, min) => {
        const part = storedImagePartSize(hint, min * MiB);
        return (
          part >= min * MiB && part % MiB === 0 && Math.ceil(hint / part) <= 9000 && part <= 5 * 1024 ** 3
        );
      }),
    );
  });
});

describe("partSizeAt", () => {
  it("starts at the base size and doubles every 900 parts, up to S3's 5 GiB", () => {
    expect(partSizeAt(1, 8 * MiB)).toBe(8 * MiB);
    expect(partSizeAt(900, 8 * MiB)).toBe(8 * MiB);
    expect(partSizeAt(901, 8 * MiB)).toBe(16 * MiB);
    expect(partSizeAt(3, 5 * MiB, 0, 2)).toBe(10 * MiB);
    // After `growAfter` parts only: a body within its hint keeps one part size.
    expect(partSizeAt(1024, 8 * MiB, 1024, 100)).toBe(8 * MiB);
    expect(partSizeAt(1025, 8 * MiB, 1024, 100)).toBe(8 * MiB);
    expect(partSizeAt(1125, 8 * MiB, 1024, 100)).toBe(16 * MiB);
    expect(partSizeAt(10_000, 1024 * MiB)).toBe(5 * 1024 * MiB);
  });

  it("lets 10,000 parts from any base of at least 5 MiB hold S3's largest object, 5 TiB", () => {
    for (const base of [5, 8, 16]) {
      let total = 0;
      for (let n = 1; n <= 10_000; n++) total += partSizeAt(n, base * MiB);
      expect(total, `base ${base} MiB`).toBeGreaterThanOrEqual(5 * 1024 ** 4);
    }
  });
});
