import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { markStored } from "../../functions/core/convert/stored.ts";
import { zeroBuffer } from "../../functions/core/convert/zeros.ts";
import { type PartTarget, writeParts } from "../../functions/core/fanout/parts.ts";
import type { FanoutStorage } from "../../functions/core/fanout/ports.ts";
import { createFanoutWorker } from "../../functions/core/fanout/worker.ts";
import { fixedClock, imageRecord, MemoryImages, silentLog } from "./fakes.ts";

// How a converted range's output becomes parts (pure logic, storage faked): which parts are copied,
// which are sent, from which buffer, and what a refused copy becomes.

const P = 1024; // part size of these tests
const UPLOAD = "staging/x/upload";

type Call =
  | { op: "send"; part: number; bytes: Uint8Array; buffer: ArrayBufferLike }
  | { op: "run"; part: number; first: number; last: number; ifMatch: string | undefined }
  | { op: "zeros"; part: number; length: number };

/** Records every call; `refuseRuns` / `zerosAre` say how storage answers copies. */
function fakeStorage(o: { refuseRuns?: boolean; zerosAre?: boolean; noZeroCopies?: boolean } = {}) {
  const calls: Call[] = [];
  const storage = {
    async uploadPart(_k: string, _u: string, part: number, body: Uint8Array) {
      calls.push({ op: "send", part, bytes: body.slice(), buffer: body.buffer });
    },
    async copyPart(
      _k: string,
      _u: string,
      part: number,
      from: { key: string; first: number; last: number; ifMatch?: string | undefined },
    ) {
      expect(from.key).toBe(UPLOAD);
      calls.push({ op: "run", part, first: from.first, last: from.last, ifMatch: from.ifMatch });
      if (o.refuseRuns) throw Object.assign(new Error("refused"), { name: "ObjectChangedError" });
    },
    ...(o.noZeroCopies
      ? {}
      : {
          async copyZeros(_k: string, _u: string, part: number, length: number) {
            calls.push({ op: "zeros", part, length });
            return o.zerosAre ?? true;
          },
        }),
  } as unknown as FanoutStorage;
  return { storage, calls };
}

/** `length` bytes marked as the upload's bytes at `at`. */
function run(at: number, length: number): Uint8Array {
  const bytes = randomBytes(length);
  const chunk = new Uint8Array(bytes.buffer, bytes.byteOffset, length);
  markStored(chunk, at);
  return chunk;
}

async function* chunks(list: Uint8Array[]): AsyncGenerator<Uint8Array> {
  yield* list;
}

async function write(list: Uint8Array[], storage: FanoutStorage, over: Partial<PartTarget> = {}) {
  const length = list.reduce((n, c) => n + c.byteLength, 0);
  const refused: string[] = [];
  const buffer = new Uint8Array(P);
  const written = await writeParts(
    chunks(list),
    { name: "range 1", firstPart: 3, lastPart: 2 + Math.ceil(length / P), length, partSize: P },
    {
      storage,
      key: "images/x",
      uploadId: "u",
      upload: { key: UPLOAD, etag: '"e"' },
      signal: new AbortController().signal,
      onRefused: (kind) => refused.push(kind),
      ...over,
    },
    buffer,
  );
  return { written, refused, buffer };
}

describe("writeParts", () => {
  const zeros = zeroBuffer(4 * P);

  it("copies parts of zeros and parts of one run, sends the others from the one buffer it is given", async () => {
    const { storage, calls } = fakeStorage();
    const data = randomBytes(P / 2);
    const list = [
      run(5000, P / 2),
      run(5000 + P / 2, P / 2), // part 3: one run across two chunks
      zeros.subarray(0, P), // part 4: the converter's zeros
      new Uint8Array(P), // part 5: zeros in an ordinary buffer
      data,
      zeros.subarray(0, P / 2), // part 6: data then zeros
      run(9000, P / 2),
      run(1, P / 2), // part 7: two runs that do not follow each other
      run(20_000, 100), // part 8, the last, short: a run
    ];
    const { written, refused, buffer } = await write(list, storage);
    expect(calls.map((c) => [c.op, c.part])).toEqual([
      ["run", 3],
      ["zeros", 4],
      ["zeros", 5],
      ["send", 6],
      ["send", 7],
      ["run", 8],
    ]);
    expect(calls[0]).toMatchObject({ first: 5000, last: 5000 + P - 1, ifMatch: '"e"' });
    expect(calls[5]).toMatchObject({ first: 20_000, last: 20_099 });
    const sent = calls.filter((c) => c.op === "send");
    for (const c of sent) expect(c.buffer).toBe(buffer.buffer);
    expect(Buffer.from(sent[0]?.bytes ?? [])).toEqual(Buffer.concat([data, new Uint8Array(P / 2)]));
    expect(written).toEqual({ bytes: 5 * P + 100, parts: 6, copied: 3 * P + 100 });
    expect(refused).toEqual([]);
  });

  it("sends a run storage refuses, and the range's later runs, from the bytes it holds", async () => {
    const { storage, calls } = fakeStorage({ refuseRuns: true });
    const a = run(0, P);
    const b = run(P, P);
    const { written, refused } = await write([a, zeros.subarray(0, P), b], storage);
    expect(calls.map((c) => [c.op, c.part])).toEqual([
      ["run", 3],
      ["send", 3],
      ["zeros", 4],
      ["send", 5],
    ]);
    const sent = calls.filter((c) => c.op === "send");
    expect(Buffer.from(sent[0]?.bytes ?? [])).toEqual(Buffer.from(a));
    expect(Buffer.from(sent[1]?.bytes ?? [])).toEqual(Buffer.from(b));
    expect(refused).toEqual(["run"]);
    expect(written.copied).toBe(P);
  });

  it("sends zeros in place of a copy that is not zeros, and the range's later zeros", async () => {
    const { storage, calls } = fakeStorage({ zerosAre: false });
    const { written } = await write([run(0, P / 2), zeros.subarray(0, 2 * P + P / 2)], storage);
    expect(calls.map((c) => [c.op, c.part])).toEqual([
      ["send", 3],
      ["zeros", 4],
      ["send", 4],
      ["send", 5],
    ]);
    for (const c of calls.slice(2)) if (c.op === "send") expect(c.bytes.every((b) => b === 0)).toBe(true);
    expect(written).toEqual({ bytes: 3 * P, parts: 3, copied: 0 });
  });

  it("copies no run without the upload's ETag, and no zeros from storage that cannot", async () => {
    const { storage, calls } = fakeStorage({ noZeroCopies: true });
    await write([run(0, P), zeros.subarray(0, P)], storage, { upload: { key: UPLOAD, etag: undefined } });
    expect(calls.map((c) => [c.op, c.part])).toEqual([
      ["send", 3],
      ["send", 4],
    ]);
  });

  it("refuses output longer or shorter than the range", async () => {
    const { storage } = fakeStorage();
    const buffer = new Uint8Array(P);
    const target = {
      storage,
      key: "k",
      uploadId: "u",
      upload: { key: UPLOAD, etag: undefined },
      signal: new AbortController().signal,
    };
    const plan = { name: "range 2", firstPart: 1, lastPart: 2, length: 2 * P, partSize: P };
    await expect(writeParts(chunks([randomBytes(3 * P)]), plan, target, buffer)).rejects.toThrow(
      "range 2 yielded more than 2048 bytes",
    );
    await expect(writeParts(chunks([randomBytes(P)]), plan, target, buffer)).rejects.toThrow(
      "range 2 gave 1024 of its 2048 bytes",
    );
  });
});

describe("the fan-out worker's part buffer", () => {
  it("is one buffer for every part of the ranges an instance writes one after another", async () => {
    const id = "00000000-0000-4000-8000-0000000000f1";
    const images = new MemoryImages();
    await images.create(
      imageRecord({
        id,
        status: "importing",
        import_execution: "exec",
        import_lease_until: "2026-01-01T00:01:00.000Z",
        import_fanout: {
          upload_key: UPLOAD,
          upload_etag: null,
          upload_size: 4 * P,
          mode: "convert",
          source_format: "qcow2",
          convert_from: "qcow2",
          stored_format: "raw",
          output_size: 4 * P,
          virtual_size: 4 * P,
          part_size: P,
          range_bytes: 2 * P,
          workers: 1,
          hash_link_bytes: 4 * P,
          algos: ["md5"],
          os_hash_algo: "sha512",
          upload_id: "u",
          started_at: "2026-01-01T00:00:00.000Z",
        },
      }),
    );
    const { storage, calls } = fakeStorage();
    const worker = createFanoutWorker({
      images,
      clock: fixedClock(),
      log: silentLog,
      storage,
      progress: { record: async () => true },
      maxVirtualSize: 2 ** 40,
      // Data the converter gives in fresh chunks of half a part.
      convertRange: async function* (_f, _s, range) {
        for (let at = range.start; at < range.end; at += P / 2) yield randomBytes(P / 2);
      },
    });
    for (const index of [0, 1]) {
      await worker.convert({
        imageId: id,
        execution: "exec",
        uploadId: "u",
        range: {
          index,
          offset: 2 * P * index,
          length: 2 * P,
          firstPart: 1 + 2 * index,
          lastPart: 2 + 2 * index,
        },
      });
    }
    const sent = calls.filter((c) => c.op === "send");
    expect(sent.map((c) => c.part)).toEqual([1, 2, 3, 4]);
    expect(new Set(sent.map((c) => c.buffer)).size).toBe(1);
  });
});
