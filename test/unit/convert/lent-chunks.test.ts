import { readFileSync } from "node:fs";
import { setImmediate as tick } from "node:timers/promises";
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { convertToRaw, gunzipSource, type SequentialSource } from "../../../functions/core/convert/index.ts";
import { ForwardReader } from "../../../functions/core/convert/source.ts";
import { SharedRead } from "../../../functions/core/import/upload-read.ts";
import { digest, makeImage, memoryRange, qemuRawSha256 } from "./helpers.ts";

// A source that lends its chunks (as the importer's socket read does): a chunk given back is overwritten
// at once, so a consumer that still read it afterwards would see the wrong bytes.

const POISON = 0xa5;

class LendingSource implements SequentialSource {
  private readonly free: Uint8Array[] = [];
  private readonly lent = new Set<ArrayBufferLike>();
  allocated = 0;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly chunk: number,
  ) {}

  get outstanding(): number {
    return this.lent.size;
  }

  async *stream(): AsyncGenerator<Uint8Array> {
    for (let at = 0; at < this.bytes.length; at += this.chunk) {
      const n = Math.min(this.chunk, this.bytes.length - at);
      const buffer = this.free.pop() ?? this.allocate();
      buffer.set(this.bytes.subarray(at, at + n));
      this.lent.add(buffer.buffer);
      // Some turns of the event loop between chunks, as a socket has.
      await tick();
      yield buffer.subarray(0, n);
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.stream();
  }

  private allocate(): Uint8Array {
    this.allocated++;
    return new Uint8Array(this.chunk);
  }

  release(chunk: Uint8Array): void {
    if (!this.lent.delete(chunk.buffer)) throw new Error("a chunk given back that is not lent");
    const whole = new Uint8Array(chunk.buffer);
    whole.fill(POISON);
    this.free.push(whole);
  }
}

describe("chunks lent by the source", () => {
  for (const [name, extra] of [
    ["lent.qcow2", []],
    ["lent-compressed.qcow2", ["-c"]],
  ] as const) {
    it(`the converter reads a ${name.replace("lent", "").replace(".qcow2", "") || "plain"} qcow2 right and gives every chunk back`, async () => {
      const path = makeImage(name, "qcow2", [], [...extra]);
      const bytes = readFileSync(path);
      const source = new LendingSource(bytes, 64 * 1024);
      const got = await digest(
        convertToRaw("qcow2", { range: memoryRange(bytes), sequential: source, size: bytes.length }),
      );
      expect(got).toEqual(qemuRawSha256(path, "qcow2"));
      expect(source.outstanding).toBe(0);
    });
  }

  it("the gunzip of a gzip-wrapped qcow2 reads it right and gives every chunk back once inflated", async () => {
    const path = makeImage("lent.qcow2", "qcow2");
    const source = new LendingSource(gzipSync(readFileSync(path)), 64 * 1024);
    expect(await digest(convertToRaw("qcow2", { sequential: gunzipSource(source) }))).toEqual(
      qemuRawSha256(path, "qcow2"),
    );
    expect(source.outstanding).toBe(0);
    expect(source.allocated).toBeLessThan(8);
  });

  it("the forward reader serves reads that step back within what it keeps, and gives chunks back as it drops them", async () => {
    const bytes = new Uint8Array(5_000_000).map((_, i) => (i * 7 + (i >> 13)) & 0xff);
    const source = new LendingSource(bytes, 100_000);
    const reader = new ForwardReader(source, undefined, bytes.length, 300_000);
    let at = 0;
    const served: { at: number; out: Uint8Array }[] = [];
    for (const [back, length] of [
      [0, 10],
      [5, 250_000],
      [200_000, 1],
      [0, 99_999],
      [0, 100_001],
      [0, 700_000],
      [250_000, 50],
      [0, 1_000_000],
    ] as const) {
      at = Math.max(0, at - back);
      const into = length > 50_000 ? new Uint8Array(length) : undefined;
      served.push({ at, out: await reader.read(at, length, undefined, into) });
      at += length;
    }
    // Each read kept while later ones went on, as the converter's windows are: none changed.
    for (const { at, out } of served) {
      expect(Buffer.compare(out, bytes.subarray(at, at + out.length)), `${at} + ${out.length}`).toBe(0);
    }
    // What it keeps: 300,000 bytes behind the last read, the chunks under it, and no more.
    expect(source.outstanding).toBeLessThanOrEqual(Math.ceil(1_300_000 / 100_000) + 1);
    expect(source.allocated).toBeLessThan(bytes.length / 100_000 / 2);
    await reader.close();
    expect(source.outstanding).toBe(0);
  });

  it("the import's shared read gives a chunk back once the observers are done, unless the converter took it", async () => {
    const bytes = new Uint8Array(1_000_000).map((_, i) => (i * 13) & 0xff);
    const seen: string[] = [];
    const observe = (from: LendingSource) => async (chunk: Uint8Array) => {
      const before = Uint8Array.from(chunk);
      await tick();
      // Still as it was: nothing gave it back while the observer was at it.
      expect(Buffer.compare(chunk, before)).toBe(0);
      seen.push(`${chunk.length}:${from.outstanding}`);
    };
    const drained = new LendingSource(bytes, 300_000);
    const read = new SharedRead(drained, observe(drained));
    await read.drain();
    expect(read.bytes).toBe(bytes.length);
    expect(drained.outstanding).toBe(0);
    expect(drained.allocated).toBe(1);

    const converted = new LendingSource(bytes, 300_000);
    const shared = new SharedRead(converted, observe(converted));
    const taken: Uint8Array[] = [];
    for await (const chunk of shared.stream()) taken.push(chunk);
    expect(converted.outstanding).toBe(4);
    expect(Buffer.compare(Buffer.concat(taken), bytes)).toBe(0);
    for (const chunk of taken) shared.release(chunk);
    expect(converted.outstanding).toBe(0);
  });
});
