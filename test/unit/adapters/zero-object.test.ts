import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { partSizeAt } from "../../../functions/adapters/s3/part-writer.ts";
import { ZERO_BASE, zeroObjectSize } from "../../../functions/adapters/s3/zero-object.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

describe("zeroObjectSize", () => {
  it("is the 8 MiB base doubled as often as a part needs, at most 5 GiB", () => {
    expect(zeroObjectSize(1)).toBe(ZERO_BASE);
    expect(zeroObjectSize(8 * MiB)).toBe(8 * MiB);
    expect(zeroObjectSize(8 * MiB + 1)).toBe(16 * MiB);
    expect(zeroObjectSize(100 * MiB)).toBe(128 * MiB);
    expect(zeroObjectSize(4 * GiB + 1)).toBe(5 * GiB);
    expect(zeroObjectSize(5 * GiB)).toBe(5 * GiB);
  });

  it("refuses lengths no part can have", () => {
    expect(() => zeroObjectSize(0)).toThrow(RangeError);
    expect(() => zeroObjectSize(5 * GiB + 1)).toThrow(RangeError);
  });

  it("holds every part partSizeAt gives, from any base, in at most 11 sizes", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 5, max: 5 * 1024 }),
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 1, max: 900 }),
        (base, n, every) => {
          const part = partSizeAt(n, base * MiB, 0, every);
          const size = zeroObjectSize(part);
          return size >= part && size <= 5 * GiB && (size === 5 * GiB || (size / ZERO_BASE) % 1 === 0);
        },
      ),
    );
    const sizes = new Set<number>();
    for (let length = MiB; length <= 5 * GiB; length += 7 * MiB) sizes.add(zeroObjectSize(length));
    expect(sizes.size).toBeLessThanOrEqual(11);
  });
});
