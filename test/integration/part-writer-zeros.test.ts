import { execFileSync } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DeleteObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeObject } from "../../functions/adapters/s3/part-writer.ts";
import { ZeroObjects } from "../../functions/adapters/s3/zero-object.ts";
import { convertToRaw } from "../../functions/core/convert/index.ts";
import { zeroBuffer } from "../../functions/core/convert/zeros.ts";
import { fileRange } from "../unit/convert/helpers.ts";
import { importedAsRaw } from "./setup/disk.ts";
import { countingClient, storedObject } from "./setup/objects.ts";
import { getStack, s3Client } from "./setup/stack.ts";

const MiB = 1024 * 1024;
const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");
const qemuImg = (...args: string[]) => execFileSync("qemu-img", args, { stdio: ["ignore", "pipe", "pipe"] });

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "hangar-zeros-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A prefix of its own for a test's objects of zeros, so that each test makes them afresh. */
const zeroPrefix = () => `test/zeros/${randomUUID()}/`;

async function pendingUploads(prefix: string): Promise<number> {
  const out = await s3Client().send(
    new ListMultipartUploadsCommand({ Bucket: getStack().bucket, Prefix: prefix }),
  );
  return (out.Uploads ?? []).filter((u) => u.Key?.startsWith(prefix)).length;
}

const sizeOf = async (key: string) =>
  (await s3Client().send(new HeadObjectCommand({ Bucket: getStack().bucket, Key: key }))).ContentLength;

async function* chunks(list: Uint8Array[]): AsyncGenerator<Uint8Array> {
  yield* list;
}

/** Writes `body` with objects of zeros under their own prefix; what was sent, tapped and stored. */
async function write(key: string, body: AsyncIterable<Uint8Array>, extra: { growEvery?: number } = {}) {
  const { client, sent } = countingClient();
  const prefix = zeroPrefix();
  const zeros = new ZeroObjects(client, getStack().bucket, prefix);
  const tapped = createHash("sha256");
  const pieces: number[] = [];
  const { size } = await writeObject(body, {
    client,
    bucket: getStack().bucket,
    key,
    partSize: 5 * MiB,
    queueSize: 2,
    zeros,
    ...extra,
    tap: (bytes) => {
      expect(bytes.buffer).toBeInstanceOf(SharedArrayBuffer);
      pieces.push(bytes.byteLength);
      tapped.update(bytes);
      return undefined;
    },
  });
  return { size, sent, prefix, zeros, client, pieces, tapped: tapped.digest("hex") };
}

/**
 * Writes 12 MiB of the converter's zeros to `key` (parts of 5 MiB) with objects of zeros under their own
 * prefix; `writeZeros` writes them again with the same client and objects of zeros.
 */
async function twiceZeros(key: string) {
  const { client, sent } = countingClient();
  const prefix = zeroPrefix();
  const zeros = new ZeroObjects(client, getStack().bucket, prefix);
  const options = { client, bucket: getStack().bucket, key, partSize: 5 * MiB, queueSize: 2, zeros };
  const writeZeros = () => writeObject(chunks([zeroBuffer(12 * MiB)]), options);
  await writeZeros();
  return { sent, prefix, writeZeros };
}

describe("parts of zeros are copied inside storage, not sent", () => {
  it("copies each part that holds only zeros (known or scanned), sends the others, and the tap sees every byte", async () => {
    const key = "test/part-writer-zeros/mixed";
    const known = zeroBuffer(4 * MiB);
    const data = randomBytes(5 * MiB);
    const tail = randomBytes(1000);
    const body = [
      data, // part 1: data
      known,
      known.subarray(0, MiB), // part 2: zeros the converter's way
      new Uint8Array(5 * MiB), // part 3: zeros in an ordinary buffer (scanned)
      known.subarray(0, 3 * MiB),
      tail, // part 4: zeros, then data
      new Uint8Array(5 * MiB - 1000 - 3 * MiB + 2 * MiB),
      known.subarray(0, 3 * MiB), // part 5: zeros, 5 MiB; part 6, the last: 2 MiB of zeros, under 5 MiB
      known.subarray(0, 2 * MiB),
    ];
    const all = Buffer.concat(body);
    expect(all.length).toBe(27 * MiB);
    const { size, sent, pieces, tapped, prefix } = await write(key, chunks(body));
    expect(size).toBe(all.length);
    expect(pieces).toEqual([5, 5, 5, 5, 5, 2].map((m) => m * MiB));
    expect(tapped).toBe(hex("sha256", all));
    expect(hex("sha256", await storedObject(key))).toBe(hex("sha256", all));
    expect(sent.get("UploadPartCommand")).toBe(2);
    expect(sent.get("UploadPartCopyCommand")).toBe(4);
    // The object of zeros was made once, by one PutObject of 8 MiB.
    expect(sent.get("PutObjectCommand")).toBe(1);
    expect(await sizeOf(`${prefix}${8 * MiB}`)).toBe(8 * MiB);
    expect(await pendingUploads(key)).toBe(0);
  });

  it("makes the object of zeros again when it was deleted since", async () => {
    const key = "test/part-writer-zeros/again";
    const { sent, prefix, writeZeros } = await twiceZeros(key);
    await s3Client().send(new DeleteObjectCommand({ Bucket: getStack().bucket, Key: `${prefix}${8 * MiB}` }));
    const { size } = await writeZeros();
    expect(size).toBe(12 * MiB);
    expect(hex("sha256", await storedObject(key))).toBe(hex("sha256", new Uint8Array(12 * MiB)));
    expect(sent.get("UploadPartCommand")).toBeUndefined();
    expect(sent.get("PutObjectCommand")).toBe(2);
  });

  it("sends the zeros instead when a copied part is not zeros (the object of zeros was overwritten)", async () => {
    const key = "test/part-writer-zeros/tampered";
    const { sent, prefix, writeZeros } = await twiceZeros(key);
    expect(sent.get("UploadPartCopyCommand")).toBe(3);
    // Someone who may write the bucket puts other bytes of the same length where the zeros were.
    await s3Client().send(
      new PutObjectCommand({
        Bucket: getStack().bucket,
        Key: `${prefix}${8 * MiB}`,
        Body: randomBytes(8 * MiB),
      }),
    );
    sent.clear();
    const { size } = await writeZeros();
    expect(size).toBe(12 * MiB);
    expect(hex("sha256", await storedObject(key))).toBe(hex("sha256", new Uint8Array(12 * MiB)));
    // At most the parts in flight were copied before the first copy's ETag gave it away; each was sent again.
    const copied = sent.get("UploadPartCopyCommand") ?? 0;
    expect(copied).toBeGreaterThanOrEqual(1);
    expect(copied).toBeLessThanOrEqual(3);
    expect(sent.get("UploadPartCommand")).toBe(3);
    expect(await pendingUploads(key)).toBe(0);
  });

  it("copies grown parts from larger objects of zeros, made from copies of the smaller ones", async () => {
    const key = "test/part-writer-zeros/growing";
    const known = zeroBuffer(4 * MiB);
    // Parts double every 2: 5, 5, 10, 10, 20 MiB, then the 7 MiB left.
    const total = 57 * MiB;
    const body = async function* () {
      for (let at = 0; at < total; at += known.length)
        yield known.subarray(0, Math.min(known.length, total - at));
    };
    const { size, sent, pieces, tapped, prefix } = await write(key, body(), { growEvery: 2 });
    expect(size).toBe(total);
    expect(pieces).toEqual([5, 5, 10, 10, 20, 7].map((m) => m * MiB));
    const zeros = new Uint8Array(total);
    expect(tapped).toBe(hex("sha256", zeros));
    expect(hex("sha256", await storedObject(key))).toBe(hex("sha256", zeros));
    expect(sent.get("UploadPartCommand")).toBeUndefined();
    // 8 MiB sent once; 16 MiB made of two copies of it, 32 MiB of two of those; then the 6 parts.
    expect(sent.get("PutObjectCommand")).toBe(1);
    expect(sent.get("UploadPartCopyCommand")).toBe(2 + 2 + 6);
    for (const m of [8, 16, 32]) expect(await sizeOf(`${prefix}${m * MiB}`)).toBe(m * MiB);
    expect(await pendingUploads(prefix)).toBe(0);
  });

  it("makes the same object of zeros when two writers race for it, and both can copy from it", async () => {
    const prefix = zeroPrefix();
    const a = new ZeroObjects(s3Client(), getStack().bucket, prefix);
    const b = new ZeroObjects(s3Client(), getStack().bucket, prefix);
    const keys = await Promise.all([a.objectFor(20 * MiB), b.objectFor(20 * MiB), b.objectFor(6 * MiB)]);
    expect(keys).toEqual([`${prefix}${32 * MiB}`, `${prefix}${32 * MiB}`, `${prefix}${8 * MiB}`]);
    const bytes = await storedObject(`${prefix}${32 * MiB}`);
    expect(bytes.length).toBe(32 * MiB);
    expect(hex("sha256", bytes)).toBe(hex("sha256", new Uint8Array(32 * MiB)));
    expect(await pendingUploads(prefix)).toBe(0);
    for (const [n, zeros] of [a, b].entries()) {
      const key = `test/part-writer-zeros/race-${n}`;
      const { client } = countingClient();
      await writeObject(chunks([zeroBuffer(21 * MiB)]), {
        client,
        bucket: getStack().bucket,
        key,
        partSize: 20 * MiB,
        queueSize: 2,
        zeros,
      });
      expect(hex("sha256", await storedObject(key))).toBe(hex("sha256", new Uint8Array(21 * MiB)));
    }
  });
});

/** A sparse disk: data in a few stretches, runs of zeros of several parts between them. */
function makeSparseQcow2(): { qcow2: string; raw: Buffer } {
  const disk = Buffer.alloc(52 * MiB);
  randomBytes(MiB + 4096).copy(disk, 64 * 1024);
  randomBytes(300 * 1024).copy(disk, 27 * MiB + 512);
  disk.fill(0x5a, 33 * MiB, 33 * MiB + 65536);
  const raw = join(dir, "sparse.raw");
  writeFileSync(raw, disk);
  const qcow2 = join(dir, "sparse.qcow2");
  qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, qcow2);
  const reference = join(dir, "sparse-ref.raw");
  qemuImg("convert", "-f", "qcow2", "-O", "raw", qcow2, reference);
  return { qcow2, raw: readFileSync(reference) };
}

/** Parts of `partSize` in `bytes` that hold only zeros. */
function zeroParts(bytes: Uint8Array, partSize: number): number {
  let n = 0;
  for (let at = 0; at < bytes.length; at += partSize)
    if (bytes.subarray(at, at + partSize).every((b) => b === 0)) n++;
  return n;
}

describe("a converted sparse image", () => {
  it("is stored byte for byte as qemu-img converts it, its zero parts copied", async () => {
    const { qcow2, raw } = makeSparseQcow2();
    const range = await fileRange(qcow2);
    const key = "test/part-writer-zeros/sparse";
    const md5 = createHash("md5");
    const sha512 = createHash("sha512");
    const { client, sent } = countingClient();
    try {
      await writeObject(convertToRaw("qcow2", { range }, { recycle: true }), {
        client,
        bucket: getStack().bucket,
        key,
        partSize: 8 * MiB,
        queueSize: 2,
        zeros: new ZeroObjects(client, getStack().bucket, zeroPrefix()),
        tap: (bytes) => {
          md5.update(bytes);
          sha512.update(bytes);
          return undefined;
        },
      });
    } finally {
      await range.close();
    }
    const out = await storedObject(key);
    const file = join(dir, "sparse-stored.raw");
    writeFileSync(file, out);
    // Exits 0 only when the guest contents are identical.
    qemuImg("compare", "-f", "raw", "-F", "qcow2", file, qcow2);
    expect(hex("md5", out)).toBe(hex("md5", raw));
    expect(md5.digest("hex")).toBe(hex("md5", raw));
    expect(sha512.digest("hex")).toBe(hex("sha512", raw));
    const parts = Math.ceil(raw.length / (8 * MiB));
    const zeros = zeroParts(raw, 8 * MiB);
    expect(zeros).toBe(4);
    expect(sent.get("UploadPartCopyCommand")).toBe(zeros);
    expect(sent.get("UploadPartCommand")).toBe(parts - zeros);
  });

  it("imported through the API ends active with qemu-img's bytes and digests", async () => {
    const { qcow2, raw } = makeSparseQcow2();
    // Gone before the import: made by it. (A write that finds it gone meanwhile makes it again.)
    const zeroKey = `zeros/${8 * MiB}`;
    await s3Client().send(new DeleteObjectCommand({ Bucket: getStack().bucket, Key: zeroKey }));
    await expect(sizeOf(zeroKey)).rejects.toThrow();
    await importedAsRaw(qcow2, raw, dir, "sparse");
    // The store's parts of zeros were copied from its object of zeros, made on first need.
    expect(await sizeOf(zeroKey)).toBe(8 * MiB);
  });
});
