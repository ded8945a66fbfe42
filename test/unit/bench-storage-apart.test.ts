import { describe, expect, it } from "vitest";
import { withoutStorage } from "../../bench/client-e2e.ts";

describe("the end to end's figure where storage does not share the cores", () => {
  it("takes storage's share of a CPU-bound stage's CPU out of its wall time", () => {
    // 10 s, 16 CPU-s of which storage 8: half of it.
    expect(withoutStorage(10, { all: 16, storage: 8, busiest: 2 })).toBeCloseTo(5);
  });

  it("never goes below the busiest thread, nor below the rest spread over two cores", () => {
    expect(withoutStorage(10, { all: 16, storage: 12, busiest: 3.5 })).toBeCloseTo(3.5);
    expect(withoutStorage(4, { all: 10, storage: 8, busiest: 0.1 })).toBeCloseTo(1);
  });

  it("never makes a stage longer than measured, and leaves one without CPU as it was", () => {
    expect(withoutStorage(2, { all: 3, storage: 0, busiest: 2.5 })).toBe(2);
    expect(withoutStorage(0.3, { all: 0, storage: 0, busiest: 0 })).toBe(0.3);
  });
});
