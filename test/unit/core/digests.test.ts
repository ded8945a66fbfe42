import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  createDigester,
  HashThreads,
  InlineDigests,
  WorkerDigests,
} from "../../../functions/core/import/digests.ts";

const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");

describe("digesters", () => {
  it("the worker-backed digester gives the same digests as hashing in one thread", async () => {
    const data = randomBytes(48 * 1024 * 1024 + 12345);
    const d = createDigester(["md5", "sha512", "sha256"]);
    // Views into one large buffer, of uneven sizes, as a converter would hand them over.
    for (let off = 0; off < data.length; ) {
      const n = Math.min(data.length - off, 100_000 + (off % 7_777));
      const wait = d.update(data.subarray(off, off + n));
      if (wait) await wait;
      off += n;
    }
    expect(d.bytes).toBe(data.length);
    expect(await d.digest()).toEqual({
      md5: hex("md5", data),
      sha512: hex("sha512", data),
      sha256: hex("sha256", data),
    });
  });

  it("makes the producer wait when the worker falls behind, and still finishes", async () => {
    const d = new WorkerDigests(["sha512"]);
    const chunk = randomBytes(4 * 1024 * 1024);
    let waited = 0;
    for (let i = 0; i < 20; i++) {
      const w = d.update(chunk);
      if (w) {
        waited++;
        await w;
      }
    }
    expect(waited).toBeGreaterThan(0);
    const expected = createHash("sha512");
    for (let i = 0; i < 20; i++) expected.update(chunk);
    expect((await d.digest()).sha512).toBe(expected.digest("hex"));
  });

  it("hashes shared-memory chunks in place, off the calling thread, in order with copied ones", async () => {
    const data = randomBytes(20 * 1024 * 1024 + 999);
    const d = createDigester(["md5", "sha512"], { inPlace: true });
    const shared = new Uint8Array(new SharedArrayBuffer(6 * 1024 * 1024));
    for (let off = 0, i = 0; off < data.length; i++) {
      const n = Math.min(data.length - off, i % 2 ? 6 * 1024 * 1024 : 333_333);
      const piece = data.subarray(off, off + n);
      if (i % 2) {
        // A part buffer: filled, handed over, and refilled only once the digester is done with it.
        shared.set(piece);
        const wait = d.update(shared.subarray(0, n));
        expect(wait).toBeInstanceOf(Promise);
        await wait;
        shared.fill(0xff);
      } else {
        const wait = d.update(piece);
        if (wait) await wait;
      }
      off += n;
    }
    expect(await d.digest()).toEqual({ md5: hex("md5", data), sha512: hex("sha512", data) });
  });

  it("keeps its threads between digesters: one stream's digest, an abandoned stream, then a clean one", async () => {
    const threads = new HashThreads();
    threads.prestart(1);
    expect(threads.idleCount).toBe(1);
    const a = randomBytes(3 * 1024 * 1024 + 5);
    const first = new WorkerDigests(["sha512", "md5"], threads);
    expect(threads.idleCount).toBe(0);
    first.update(a);
    expect(await first.digest()).toEqual({ sha512: hex("sha512", a), md5: hex("md5", a) });
    // The thread went back, and the next digester takes it rather than starting one.
    expect(threads.idleCount).toBe(1);
    const abandoned = new WorkerDigests(["sha512"], threads);
    expect(threads.idleCount).toBe(0);
    abandoned.update(a);
    abandoned.close();
    // Given up mid-stream: its thread is ended, not kept with a half-hashed stream in it.
    expect(threads.idleCount).toBe(0);
    const b = new Uint8Array(new SharedArrayBuffer(1024 * 1024)).fill(7);
    const next = new WorkerDigests(["sha512"], threads);
    await next.update(b);
    expect(await next.digest()).toEqual({ sha512: hex("sha512", b) });
    expect(threads.idleCount).toBe(1);
    expect(() => next.update(b)).toThrow();
  });

  it("a digester closed while a chunk is hashed in place tells whoever waits for it, instead of leaving them waiting", async () => {
    const threads = new HashThreads();
    const digester = new WorkerDigests(["md5"], threads);
    const chunk = new Uint8Array(new SharedArrayBuffer(4 * 1024 * 1024)).fill(1);
    const hashed = digester.update(chunk);
    // Closed before the thread can have answered (that takes a turn of the event loop).
    digester.close();
    await expect(hashed).rejects.toThrow("the digester was closed");
  });

  it("inline digests cover an empty stream", async () => {
    const d = new InlineDigests(["md5"]);
    expect(await d.digest()).toEqual({ md5: hex("md5", new Uint8Array(0)) });
  });
});
