import { describe, expect, it } from "vitest";
import type { ObjectRead } from "../../functions/core/ports.ts";
import { lazily } from "../../functions/roots/lazy.ts";

interface Reader {
  read(key: string): ObjectRead;
}

describe("lazily, with a read that lends its chunks", () => {
  it("gives each chunk back to the loaded adapter's read, so its buffers are used again", async () => {
    const released: Uint8Array[] = [];
    const reader = lazily<Reader>(async () => ({
      read: () => ({
        async *[Symbol.asyncIterator]() {
          yield new Uint8Array([1]);
          yield new Uint8Array([2]);
        },
        release: (chunk: Uint8Array) => released.push(chunk),
      }),
    }));
    const read = reader.read("k");
    const seen: Uint8Array[] = [];
    for await (const chunk of read) {
      seen.push(chunk);
      read.release?.(chunk);
    }
    expect(seen.map((c) => c[0])).toEqual([1, 2]);
    expect(released).toEqual(seen);
  });
});
