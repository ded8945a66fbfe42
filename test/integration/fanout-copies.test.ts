import { execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3FanoutStorage } from "../../functions/adapters/s3/fanout-storage.ts";
import { ZeroObjects } from "../../functions/adapters/s3/zero-object.ts";
import { convertRangeToRaw } from "../../functions/core/convert/index.ts";
import { writeParts } from "../../functions/core/fanout/parts.ts";
import type { FanoutStorage } from "../../functions/core/fanout/ports.ts";
import { uploadReader } from "../../functions/core/fanout/worker.ts";
import { ObjectChangedError } from "../../functions/core/ports.ts";
import { TEST_FANOUT_ENV } from "./setup/fanout-env.ts";
import { countingClient, storedObject } from "./setup/objects.ts";
import { api, getStack, s3Client, stackLog, uploadThroughLink, waitForStatus } from "./setup/stack.ts";

// A converted fan-out's parts of zeros and parts that are one run of the upload's bytes are copied by
// storage (UploadPartCopy), not sent; a copy storage refuses never stores other bytes. The stored bytes
// are compared with qemu-img's raw conversion of the upload.

const MiB = 1024 * 1024;
const PART = 8 * MiB;
const qemuImg = (...args: string[]) => execFileSync("qemu-img", args, { stdio: ["ignore", "pipe", "pipe"] });

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "hangar-fanout-copies-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A qcow2 made by qemu-img (clusters stored back to back, in guest order) of `size` bytes whose guest
 * holds random data at each `[offset, length]` and zeros elsewhere.
 */
function makeQcow2(size: number, data: [number, number][]): string {
  const disk = Buffer.alloc(size);
  for (const [at, length] of data) randomBytes(length).copy(disk, at);
  const raw = join(dir, `${randomUUID()}.raw`);
  writeFileSync(raw, disk);
  const qcow2 = `${raw}.qcow2`;
  qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, qcow2);
  return qcow2;
}

/** Whether the raw bytes stored at `key` are qemu-img's conversion of `qcow2` (qemu-img compare exits 0). */
async function matchesQemu(key: string, qcow2: string): Promise<boolean> {
  const file = join(dir, `${randomUUID()}.stored`);
  writeFileSync(file, await storedObject(key));
  try {
    qemuImg("compare", "-f", "raw", "-F", "qcow2", file, qcow2);
    return true;
  } catch {
    return false;
  }
}

describe("a fanned-out qcow2 through the stack", () => {
  it("stores qemu-img's raw bytes, its parts of zeros and its runs of the upload copied by storage", async () => {
    // 80 MiB of guest (above the stack's 72 MiB threshold; 16 MiB ranges of 8 MiB parts): parts 1-2 are
    // stored data, part 3 data then zeros (sent), parts 4-8 zeros, part 9 stored data, part 10 zeros.
    const virtual = 80 * MiB;
    expect(Number(TEST_FANOUT_ENV.HANGAR_FANOUT_THRESHOLD)).toBeLessThan(virtual);
    const qcow2 = makeQcow2(virtual, [
      [0, 20 * MiB],
      [64 * MiB, 8 * MiB],
    ]);
    const res = await api(
      "/v2/images",
      {
        method: "POST",
        body: JSON.stringify({ name: "fanout copies", disk_format: "qcow2", container_format: "bare" }),
      },
      getStack().tokens.alice,
    );
    const { id } = await uploadThroughLink(res, readFileSync(qcow2));
    const image = await waitForStatus(id, "active", getStack().tokens.alice, 120_000);
    expect(image).toMatchObject({ disk_format: "raw", converted: true, size: virtual });
    expect(await matchesQemu(`images/${id}`, qcow2)).toBe(true);

    const log = (await stackLog()).filter((l) => l.includes(id));
    expect(log.filter((l) => l.includes("import fanned out"))).toHaveLength(1);
    const ranges = log.filter((l) => l.includes("fan-out range written"));
    expect(ranges.length).toBeGreaterThanOrEqual(virtual / Number(TEST_FANOUT_ENV.HANGAR_FANOUT_RANGE_BYTES));
    // Each range counted once per write; a retried range would log twice, so sum by range.
    const copied = new Map<number, number>();
    for (const line of ranges) {
      const range = Number(/"range":(\d+)/.exec(line)?.[1]);
      copied.set(range, Number(/"copied":(\d+)/.exec(line)?.[1]));
    }
    // Nine of the ten parts copied (six of zeros, three runs of the upload); part 3 sent.
    expect([...copied.values()].reduce((a, b) => a + b, 0)).toBe(9 * PART);
    expect(log.filter((l) => l.includes("fan-out copy refused"))).toHaveLength(0);
  }, 180_000);
});

describe("a converted range written by the worker's code against storage", () => {
  // 40 MiB of guest in two ranges, [0, 16) and [16, 40) MiB: parts 1-2 stored data, part 3 data then
  // zeros, part 4 zeros, part 5 stored data.
  const VIRTUAL = 40 * MiB;
  const RANGES = [
    { name: "range 0", firstPart: 1, lastPart: 2, offset: 0, length: 16 * MiB },
    { name: "range 1", firstPart: 3, lastPart: 5, offset: 16 * MiB, length: 24 * MiB },
  ];
  let qcow2: string;
  beforeAll(() => {
    qcow2 = makeQcow2(VIRTUAL, [
      [0, 20 * MiB],
      [32 * MiB, 8 * MiB],
    ]);
  });

  /** Puts `bytes` at `key`; the ETag storage gave them. */
  async function put(key: string, bytes: Uint8Array): Promise<string> {
    const out = await s3Client().send(
      new PutObjectCommand({ Bucket: getStack().bucket, Key: key, Body: bytes }),
    );
    return out.ETag ?? "";
  }

  /**
   * Converts both ranges of the upload `uploadKey` (required to have `etag`) into a multipart upload at
   * `key`, as the worker does (one part buffer for both ranges), reading through `reads` and writing
   * through a counting client; completes it.
   */
  async function writeRanges(
    key: string,
    uploadKey: string,
    etag: string,
    reads: (storage: FanoutStorage) => FanoutStorage = (s) => s,
  ) {
    const { client, sent } = countingClient();
    const bucket = getStack().bucket;
    const storage = new S3FanoutStorage(
      client,
      bucket,
      new ZeroObjects(client, bucket, `test/zeros/${randomUUID()}/`),
    );
    const uploadId = await storage.create(key);
    const job = { upload_key: uploadKey, upload_etag: etag, upload_size: readFileSync(qcow2).length };
    const buffer = new Uint8Array(PART);
    const refused: [string, unknown][] = [];
    let copied = 0;
    const signal = new AbortController().signal;
    for (const range of RANGES) {
      const out = convertRangeToRaw(
        "qcow2",
        { range: uploadReader(reads(storage), job, signal) },
        { start: range.offset, end: range.offset + range.length },
        { signal, recycle: true },
      );
      const written = await writeParts(
        out,
        { ...range, partSize: PART },
        {
          storage,
          key,
          uploadId,
          upload: { key: uploadKey, etag },
          signal,
          onRefused: (kind, err) => refused.push([kind, err]),
        },
        buffer,
      );
      expect(written).toMatchObject({ bytes: range.length, parts: range.lastPart - range.firstPart + 1 });
      copied += written.copied;
    }
    const parts = (await storage.listParts(key, uploadId)) ?? [];
    expect(parts.map((p) => p.partNumber)).toEqual([1, 2, 3, 4, 5]);
    await storage.complete(key, uploadId, parts);
    return { sent, refused, copied };
  }

  it("copies the parts of zeros and of runs, sends the rest, and stores qemu-img's bytes", async () => {
    const base = `test/fanout-copies/${randomUUID()}`;
    const etag = await put(`${base}/upload`, readFileSync(qcow2));
    const { sent, refused, copied } = await writeRanges(`${base}/image`, `${base}/upload`, etag);
    expect(await matchesQemu(`${base}/image`, qcow2)).toBe(true);
    // Parts 1, 2, 5 copied from the upload, part 4 from an object of zeros; part 3 sent.
    expect(sent.get("UploadPartCommand")).toBe(1);
    expect(sent.get("UploadPartCopyCommand")).toBe(4);
    expect(copied).toBe(4 * PART);
    expect(refused).toEqual([]);
  });

  it("a copy refused because the upload was replaced sends the bytes read under the upload's ETag, never the new ones", async () => {
    const base = `test/fanout-copies/${randomUUID()}`;
    const upload = readFileSync(qcow2);
    // The bytes the ranges read, under the ETag the job holds (one PutObject of the same bytes: the same
    // md5 ETag) ...
    const etag = await put(`${base}/read`, upload);
    expect(await put(`${base}/upload`, upload)).toBe(etag);
    // ... while the upload the copies name is replaced by other bytes of the same size after the read.
    await put(`${base}/upload`, randomBytes(upload.length));
    const readOriginal = (s: FanoutStorage): FanoutStorage =>
      Object.assign(Object.create(s) as FanoutStorage, {
        readRange: (key: string, offset: number, length: number, o?: { ifMatch?: string }) =>
          s.readRange(key === `${base}/upload` ? `${base}/read` : key, offset, length, o),
      });
    const { sent, refused, copied } = await writeRanges(
      `${base}/image`,
      `${base}/upload`,
      etag,
      readOriginal,
    );
    expect(await matchesQemu(`${base}/image`, qcow2)).toBe(true);
    // Each range's first run copy is refused (412: the ETag is not the upload's any more) and sent, and
    // so are its later runs: parts 1, 2, 3, 5 sent, part 4 of zeros still copied.
    expect(refused.map(([kind, err]) => [kind, err instanceof ObjectChangedError])).toEqual([
      ["run", true],
      ["run", true],
    ]);
    expect(sent.get("UploadPartCommand")).toBe(4);
    expect(sent.get("UploadPartCopyCommand")).toBe(3);
    expect(copied).toBe(PART);
  });
});
