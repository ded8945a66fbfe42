import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { partSizeFor } from "../../../functions/adapters/s3/object-store.ts";

const MiB = 1024 * 1024;

describe("partSizeFor", () => {
  it("keeps the configured size for small bodies", () => {
    expect(partSizeFor(1024, 8 * MiB)).toBe(8 * MiB);
    expect(partSizeFor(undefined, 8 * MiB)).toBe(8 * MiB);
    expect(partSizeFor(70 * 1024 * MiB, 8 * MiB)).toBe(8 * MiB);
  });

  it("grows parts so any body up to 5 TiB fits S3's 10,000 parts, in whole MiB", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 * 1024 ** 4 }), fc.constantFrom(5, 8, 16), (hint, min) => {
        const part = partSizeFor(hint, min * MiB);
        return (
          part >= min * MiB && part % MiB === 0 && Math.ceil(hint / part) <= 9000 && part <= 5 * 1024 ** 3
        );
      }),
    );
  });
});
