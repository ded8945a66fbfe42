import { execFileSync } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeObject } from "../../functions/adapters/s3/part-writer.ts";
import { ZeroObjects } from "../../functions/adapters/s3/zero-object.ts";
import { convertToRaw, storedAt } from "../../functions/core/convert/index.ts";
import type { CopyFrom } from "../../functions/core/ports.ts";
import { fileRange } from "../unit/convert/helpers.ts";
import { importedAsRaw } from "./setup/disk.ts";
import { countingClient, storedObject } from "./setup/objects.ts";
import { getStack, s3Client, stackLog } from "./setup/stack.ts";

const MiB = 1024 * 1024;
const PART = 8 * MiB;
const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");
const qemuImg = (...args: string[]) => execFileSync("qemu-img", args, { stdio: ["ignore", "pipe", "pipe"] });

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "hangar-runs-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A qcow2 (made by qemu-img, clusters stored back to back) of 48 MiB whose first 20 MiB are random data
 * and the rest zeros, and qemu-img's raw of it. With parts of 8 MiB: two parts of stored data, one of
 * data then zeros, three of zeros.
 */
function makeQcow2(): { qcow2: string; raw: Buffer } {
  const disk = Buffer.alloc(48 * MiB);
  randomBytes(20 * MiB).copy(disk, 0);
  const raw = join(dir, `${randomUUID()}.raw`);
  writeFileSync(raw, disk);
  const qcow2 = `${raw}.qcow2`;
  qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, qcow2);
  const reference = `${raw}.ref`;
  qemuImg("convert", "-f", "qcow2", "-O", "raw", qcow2, reference);
  return { qcow2, raw: readFileSync(reference) };
}

/** Puts `bytes` at `key`; the version and ETag storage gave them. */
async function put(key: string, bytes: Uint8Array): Promise<{ versionId?: string; etag?: string }> {
  const out = await s3Client().send(
    new PutObjectCommand({ Bucket: getStack().bucket, Key: key, Body: bytes }),
  );
  return { versionId: out.VersionId, etag: out.ETag };
}

/**
 * Converts the local `qcow2` to raw into `key`, with `from` the object its runs may be copied from;
 * what was sent, what the write says it copied, and the digests of what the tap saw.
 */
async function convertInto(qcow2: string, key: string, from: CopyFrom | undefined) {
  const { client, sent } = countingClient();
  const range = await fileRange(qcow2);
  const md5 = createHash("md5");
  try {
    const written = await writeObject(convertToRaw("qcow2", { range }, { recycle: true }), {
      client,
      bucket: getStack().bucket,
      key,
      partSize: PART,
      queueSize: 2,
      zeros: new ZeroObjects(client, getStack().bucket, `test/zeros/${randomUUID()}/`),
      ...(from ? { copyFrom: from } : {}),
      tap: (bytes) => {
        md5.update(bytes);
        return undefined;
      },
    });
    return { written, sent, tapped: md5.digest("hex") };
  } finally {
    await range.close();
  }
}

describe("runs of the upload's bytes in a converted image are copied inside storage", () => {
  it("copies each part that is one stored run from the version read, sends the rest, and stores qemu-img's bytes", async () => {
    const { qcow2, raw } = makeQcow2();
    const base = `test/part-writer-runs/${randomUUID()}`;
    const uploaded = await put(`${base}/upload`, readFileSync(qcow2));
    expect(uploaded.versionId).toBeTruthy();
    // The key is written again before the conversion: the copies name the version read, not the key.
    await put(`${base}/upload`, randomBytes(16 * MiB));
    const { written, sent, tapped } = await convertInto(qcow2, `${base}/image`, {
      key: `${base}/upload`,
      versionId: uploaded.versionId,
      offsetOf: storedAt,
    });
    const out = await storedObject(`${base}/image`);
    expect(hex("md5", out)).toBe(hex("md5", raw));
    expect(tapped).toBe(hex("md5", raw));
    const file = join(dir, "stored.raw");
    writeFileSync(file, out);
    qemuImg("compare", "-f", "raw", "-F", "qcow2", file, qcow2);
    // Parts 1 and 2 are runs of the upload, part 3 is data and zeros (sent), parts 4-6 are zeros.
    expect(sent.get("UploadPartCommand")).toBe(1);
    expect(sent.get("UploadPartCopyCommand")).toBe(5);
    expect(written).toEqual({ size: raw.length, copied: raw.length - PART });
  });

  it("sends every part when no copy source is given", async () => {
    const { qcow2, raw } = makeQcow2();
    const key = `test/part-writer-runs/${randomUUID()}/image`;
    const { written, sent } = await convertInto(qcow2, key, undefined);
    expect(hex("md5", await storedObject(key))).toBe(hex("md5", raw));
    expect(sent.get("UploadPartCommand")).toBe(3);
    expect(written.copied).toBe(3 * PART);
  });

  it("sends the parts instead when storage refuses the copy (the upload was replaced since its ETag was taken)", async () => {
    const { qcow2, raw } = makeQcow2();
    const base = `test/part-writer-runs/${randomUUID()}`;
    const uploaded = await put(`${base}/upload`, readFileSync(qcow2));
    // Replaced by other bytes: a copy requiring the first ETag is refused, and must not store these.
    await put(`${base}/upload`, randomBytes(24 * MiB));
    const { written, sent, tapped } = await convertInto(qcow2, `${base}/image`, {
      key: `${base}/upload`,
      etag: uploaded.etag,
      offsetOf: storedAt,
    });
    const out = await storedObject(`${base}/image`);
    expect(hex("md5", out)).toBe(hex("md5", raw));
    expect(tapped).toBe(hex("md5", raw));
    // One copy of a run tried and refused; that part and every later one with data sent.
    expect(sent.get("UploadPartCommand")).toBe(3);
    expect(written.copied).toBe(3 * PART);
  });

  it("a qcow2 imported through the API ends active with qemu-img's bytes, its runs copied from the upload", async () => {
    const { qcow2, raw } = makeQcow2();
    const id = await importedAsRaw(qcow2, raw, dir, "runs");
    const inspected = (await stackLog()).find((l) => l.includes(id) && l.includes("bytesCopied"));
    expect(inspected, "the import's inspected line").toBeDefined();
    const copied = Number(/"bytesCopied":(\d+)/.exec(inspected ?? "")?.[1]);
    expect(copied).toBeGreaterThanOrEqual(raw.length - PART);
  });
});
