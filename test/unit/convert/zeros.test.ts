import { describe, expect, it } from "vitest";
import { isZeros, zeroBuffer } from "../../../functions/core/convert/zeros.ts";

describe("isZeros", () => {
  it("knows a view of a zero buffer without reading it", () => {
    const zeros = zeroBuffer(1 << 20);
    expect(isZeros(zeros)).toBe(true);
    expect(isZeros(zeros.subarray(100, 5000))).toBe(true);
  });

  it("scans other bytes: zeros only when every byte is zero", () => {
    const size = 200_000;
    expect(isZeros(new Uint8Array(0))).toBe(true);
    expect(isZeros(new Uint8Array(size))).toBe(true);
    for (const at of [0, 1, 65_535, 65_536, 131_072, size - 2, size - 1]) {
      const bytes = new Uint8Array(size);
      bytes[at] = 1;
      expect(isZeros(bytes), `a byte at ${at}`).toBe(false);
      // The same bytes seen through a view that starts and ends elsewhere.
      expect(isZeros(bytes.subarray(Math.max(0, at - 70_000), at + 1))).toBe(false);
      expect(isZeros(bytes.subarray(at + 1))).toBe(true);
    }
  });

  it("is not fooled by an ordinary buffer of zeros written to later", () => {
    const bytes = new Uint8Array(4096);
    expect(isZeros(bytes)).toBe(true);
    bytes[2000] = 7;
    expect(isZeros(bytes)).toBe(false);
  });
});
