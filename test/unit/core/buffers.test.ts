import { describe, expect, it } from "vitest";
import { BufferPool } from "../../../functions/core/buffers.ts";

const pool = (max = 64) => new BufferPool((n) => new ArrayBuffer(n), max);

describe("BufferPool", () => {
  it("hands back a buffer given back, of the size asked, and makes one otherwise", () => {
    const p = pool();
    const a = p.take(16);
    expect(p.made).toBe(1);
    p.give(a);
    expect(p.heldBytes).toBe(16);
    expect(p.take(16)).toBe(a);
    expect(p.heldBytes).toBe(0);
    expect(p.made).toBe(1);
    // Another size is another buffer.
    p.give(a);
    const b = p.take(8);
    expect(b).not.toBe(a);
    expect(b.byteLength).toBe(8);
    expect(p.made).toBe(2);
  });

  it("keeps a buffer given back twice once, so that two takers never share it", () => {
    const p = pool();
    const a = p.take(16);
    p.give(a);
    p.give(a);
    expect(p.heldBytes).toBe(16);
    const first = p.take(16);
    const second = p.take(16);
    expect(first).toBe(a);
    expect(second).not.toBe(a);
  });

  it("keeps no more idle bytes than its limit", () => {
    const p = pool(40);
    const bufs = [p.take(16), p.take(16), p.take(16)];
    for (const b of bufs) p.give(b);
    expect(p.heldBytes).toBe(32);
    expect(p.take(16)).toBe(bufs[1]);
    expect(p.take(16)).toBe(bufs[0]);
    // The third was left to the GC.
    expect(p.take(16)).not.toBe(bufs[2]);
  });
});
