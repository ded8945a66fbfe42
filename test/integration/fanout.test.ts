import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3ObjectStore } from "../../functions/adapters/s3/object-store.ts";
import { runPipeline } from "../../functions/core/import/pipeline.ts";
import { DEFAULT_IMPORT_POLICY } from "../../functions/core/policy.ts";
import { TEST_FANOUT_ENV } from "./setup/fanout-env.ts";
import { api, getStack, s3Client, stackLog, uploadThroughLink, waitForStatus } from "./setup/stack.ts";

// The fan-out import end to end on the shared stack, whose importer fans out images above 72 MiB of
// virtual size (setup/global-setup.ts) in 16 MiB ranges of 8 MiB parts and 24 MiB hash links: the
// importer inspects and starts the local state machine, which runs infra/stepfunctions/fanout.asl.json
// with the three built fan-out functions. Each result is compared with what the single-invocation
// import (its pipeline, run here on a copy of the same upload) stores.

const MiB = 1024 * 1024;
const VIRTUAL = 80 * MiB;
const RANGE = Number(TEST_FANOUT_ENV.HANGAR_FANOUT_RANGE_BYTES);
const LINK = Number(TEST_FANOUT_ENV.HANGAR_FANOUT_HASH_LINK_BYTES);
const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");
const qemuImg = (...args: string[]) => execFileSync("qemu-img", args, { stdio: ["ignore", "pipe", "pipe"] });

let dir: string;
let source: string;

/**
 * 80 MiB of guest: random data across range boundaries (16, 32, 48 MiB), compressible text, a pattern,
 * and holes, so ranges start and end inside data, zeros and clusters alike.
 */
function makeSource(path: string): void {
  const disk = Buffer.alloc(VIRTUAL);
  randomBytes(3 * MiB).copy(disk, 15 * MiB + 4096);
  randomBytes(2 * MiB + 512).copy(disk, 47 * MiB);
  const text = Buffer.from("Hangar imports images of any size, one range at a time. ".repeat(40_000));
  text.copy(disk, 30 * MiB, 0, Math.min(text.length, 6 * MiB));
  disk.fill(0xab, 64 * MiB, 64 * MiB + 65536);
  randomBytes(1 * MiB).copy(disk, VIRTUAL - MiB);
  writeFileSync(path, disk);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "hangar-fanout-"));
  source = join(dir, "source.raw");
  makeSource(source);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function create(body: Record<string, unknown>, bytes: Uint8Array): Promise<string> {
  const res = await api(
    "/v2/images",
    { method: "POST", body: JSON.stringify(body) },
    getStack().tokens.alice,
  );
  return (await uploadThroughLink(res, bytes)).id;
}

async function getBytes(key: string): Promise<Buffer> {
  const out = await s3Client().send(new GetObjectCommand({ Bucket: getStack().bucket, Key: key }));
  return Buffer.from(
    await (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
  );
}

async function exists(key: string): Promise<boolean> {
  try {
    await s3Client().send(new HeadObjectCommand({ Bucket: getStack().bucket, Key: key }));
    return true;
  } catch {
    return false;
  }
}

/** Every object whose key starts with `prefix`. */
async function keysUnder(prefix: string): Promise<string[]> {
  const out = await s3Client().send(new ListObjectsV2Command({ Bucket: getStack().bucket, Prefix: prefix }));
  return (out.Contents ?? []).map((o) => o.Key ?? "");
}

async function uploadsAt(key: string): Promise<number> {
  const out = await s3Client().send(
    new ListMultipartUploadsCommand({ Bucket: getStack().bucket, Prefix: key }),
  );
  return (out.Uploads ?? []).filter((u) => u.Key === key).length;
}

/**
 * The single-invocation import of `bytes` (the importer's pipeline, default policy), outside staging/;
 * with `declaredSha256` it also computes the upload's sha256, as it does for an image that declares one.
 */
async function singleImport(bytes: Uint8Array, tag: string, declaredSha256 = false) {
  const info = getStack();
  process.env.AWS_ACCESS_KEY_ID = info.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = info.secretAccessKey;
  const objects = new S3ObjectStore({
    bucket: info.bucket,
    region: info.region,
    endpoint: info.s3Endpoint,
    partSize: 8 * MiB,
  });
  const key = `test-single/${tag}/upload`;
  await s3Client().send(new PutObjectCommand({ Bucket: info.bucket, Key: key, Body: bytes }));
  const head = await objects.head(key);
  const result = await runPipeline({
    key,
    outputKey: `test-single/${tag}/image`,
    spoolKey: `test-single/${tag}/spool`,
    size: bytes.length,
    etag: head?.etag,
    declaredFormat: null,
    declaredSha256,
    osHashAlgo: "sha512",
    policy: DEFAULT_IMPORT_POLICY,
    objects,
    signal: new AbortController().signal,
    onProgress: () => undefined,
  });
  return { result, stored: await getBytes(`test-single/${tag}/image`) };
}

/** Lines the stack logged for image `id` containing `text`. */
async function logged(id: string, text: string): Promise<string[]> {
  return (await stackLog()).filter((l) => l.includes(id) && l.includes(text));
}

describe("fan-out import (images above HANGAR_FANOUT_THRESHOLD)", () => {
  const CASES: [string, string, string[] | null][] = [
    ["qcow2", "qcow2", ["-O", "qcow2"]],
    ["zlib-compressed qcow2", "qcow2", ["-O", "qcow2", "-c"]],
    ["raw with a declared upload_sha256 (stored as uploaded, parts copied by storage)", "raw", null],
  ];
  for (const [label, format, args] of CASES) {
    it(`${label}: identical to the single-invocation import, same checksum and os_hash_value`, async () => {
      const file = args ? join(dir, `${format}-${args.length}.img`) : source;
      if (args) qemuImg("convert", "-f", "raw", ...args, source, file);
      const upload = readFileSync(file);
      // An upload stored as it is is the stored object: the stored chain checks its declared sha256,
      // and no chain of the upload's own runs.
      const declared = args ? {} : { upload_sha256: hex("sha256", upload) };
      const id = await create(
        { name: `fanout ${label}`, disk_format: format, container_format: "bare", ...declared },
        upload,
      );
      const image = await waitForStatus(id, "active", getStack().tokens.alice, 120_000);

      // It went through the state machine, not one invocation.
      expect(await logged(id, "import fanned out")).toHaveLength(1);
      const links = await logged(id, "fan-out hash link");
      expect(links.length).toBe(Math.ceil(VIRTUAL / LINK));
      expect((await logged(id, "fan-out range written")).length).toBeGreaterThanOrEqual(VIRTUAL / RANGE);
      expect(await logged(id, "fan-out upload hash link")).toHaveLength(0);

      const single = await singleImport(upload, id);
      const fanned = await getBytes(`images/${id}`);
      const a = join(dir, `${id}-fanout.raw`);
      const b = join(dir, `${id}-single.raw`);
      writeFileSync(a, fanned);
      writeFileSync(b, single.stored);
      // qemu-img compare exits 0 only for identical contents (and prints "Images are identical.").
      expect(qemuImg("compare", "-f", "raw", "-F", "raw", a, b).toString()).toContain("Images are identical");
      expect(fanned.equals(single.stored)).toBe(true);
      expect(image).toMatchObject({
        disk_format: "raw",
        source_format: format,
        converted: format !== "raw",
        size: single.result.storedSize,
        virtual_size: VIRTUAL,
        checksum: single.result.stored.md5,
        os_hash_algo: "sha512",
        os_hash_value: single.result.stored.sha512,
      });
      // The chain of several links gives the digests of one pass over the stored bytes.
      expect(image.checksum).toBe(hex("md5", fanned));
      expect(image.os_hash_value).toBe(hex("sha512", fanned));
      expect(image.import_progress).toMatchObject({
        workers: 3,
        ranges_done: VIRTUAL / RANGE,
        ranges_total: VIRTUAL / RANGE,
        bytes_hashed: VIRTUAL,
      });
      // The upload is gone once imported, and no multipart upload is left behind.
      expect(await exists(`staging/${id}/upload`)).toBe(false);
      expect(await uploadsAt(`images/${id}`)).toBe(0);
    }, 180_000);
  }

  describe("a qcow2 whose image declares upload_sha256 (as Hangar's CLI and browser page always do)", () => {
    let upload: Buffer;
    beforeAll(() => {
      // Every cluster allocated (-S 0): an upload of about the virtual size, so the upload's own chain
      // takes several links too.
      const file = join(dir, "declared.qcow2");
      qemuImg("convert", "-f", "raw", "-O", "qcow2", "-S", "0", source, file);
      upload = readFileSync(file);
    });

    it("fans out with a chain over the upload beside the conversion, and is identical to the single import", async () => {
      const sha256 = hex("sha256", upload);
      const id = await create(
        { name: "fanout declared", disk_format: "qcow2", container_format: "bare", upload_sha256: sha256 },
        upload,
      );
      const image = await waitForStatus(id, "active", getStack().tokens.alice, 120_000);

      // Through the state machine: both chains ran, each in several links.
      expect(await logged(id, "import fanned out")).toHaveLength(1);
      expect(upload.length).toBeGreaterThan(2 * LINK);
      expect(await logged(id, "fan-out upload hash link")).toHaveLength(Math.ceil(upload.length / LINK));
      expect(await logged(id, "fan-out hash link")).toHaveLength(Math.ceil(VIRTUAL / LINK));

      const single = await singleImport(upload, id, true);
      expect(single.result.upload.sha256).toBe(sha256);
      const fanned = await getBytes(`images/${id}`);
      const a = join(dir, `${id}-fanout.raw`);
      const b = join(dir, `${id}-single.raw`);
      writeFileSync(a, fanned);
      writeFileSync(b, single.stored);
      expect(qemuImg("compare", "-f", "raw", "-F", "raw", a, b).toString()).toContain("Images are identical");
      expect(image).toMatchObject({
        disk_format: "raw",
        source_format: "qcow2",
        converted: true,
        upload_sha256: sha256,
        size: VIRTUAL,
        virtual_size: VIRTUAL,
        checksum: single.result.stored.md5,
        os_hash_algo: "sha512",
        os_hash_value: single.result.stored.sha512,
      });
      expect(image.import_progress).toMatchObject({
        ranges_done: VIRTUAL / RANGE,
        ranges_total: VIRTUAL / RANGE,
        bytes_hashed: VIRTUAL,
        upload_bytes_hashed: upload.length,
      });
      expect(await exists(`staging/${id}/upload`)).toBe(false);
      expect(await uploadsAt(`images/${id}`)).toBe(0);
    }, 180_000);

    it("a wrong declared sha256 kills the image with DIGEST_MISMATCH and leaves nothing behind", async () => {
      const wrong = hex("sha256", Buffer.from("not this upload"));
      const id = await create(
        { name: "fanout wrong digest", disk_format: "qcow2", container_format: "bare", upload_sha256: wrong },
        upload,
      );
      const image = await waitForStatus(id, "killed", getStack().tokens.alice, 120_000);
      expect(await logged(id, "import fanned out")).toHaveLength(1);
      // The single import's reason and message.
      expect(image.failure).toEqual({
        reason: "DIGEST_MISMATCH",
        message: `The upload's sha256 is ${hex("sha256", upload)} but the image declared upload_sha256 ${wrong}.`,
      });
      expect(image.checksum ?? null).toBeNull();
      // No stored object, no parts, nothing left of the upload.
      expect(await keysUnder(`images/${id}`)).toEqual([]);
      expect(await uploadsAt(`images/${id}`)).toBe(0);
      expect(await keysUnder(`staging/${id}/`)).toEqual([]);
    }, 180_000);
  });

  it("a worker's failure (a corrupt cluster in one range) kills the image and leaves nothing behind", async () => {
    const file = join(dir, "corrupt.qcow2");
    qemuImg("convert", "-f", "raw", "-O", "qcow2", source, file);
    const img = readFileSync(file);
    // Point the L2 entry of the guest cluster at 40 MiB (the third range) past the end of the file:
    // the inspector does not read L2 tables, the worker converting that range refuses it.
    const clusterBits = img.readUInt32BE(20);
    const l1 = Number(img.readBigUInt64BE(40));
    const l2 = Number(img.readBigUInt64BE(l1) & 0x00ff_ffff_ffff_fe00n);
    const cluster = (40 * MiB) >> clusterBits;
    const beyond = BigInt(Math.ceil(img.length / 2 ** clusterBits) + 1024) << BigInt(clusterBits);
    img.writeBigUInt64BE(0x8000_0000_0000_0000n | beyond, l2 + cluster * 8);
    const id = await create({ name: "fanout corrupt", disk_format: "qcow2", container_format: "bare" }, img);
    const image = await waitForStatus(id, "killed", getStack().tokens.alice, 120_000);
    expect(await logged(id, "import fanned out")).toHaveLength(1);
    expect(image.failure).toMatchObject({
      reason: "UNSAFE_IMAGE",
      message: expect.stringContaining("has an invalid host offset"),
    });
    expect(await exists(`images/${id}`)).toBe(false);
    expect(await exists(`staging/${id}/upload`)).toBe(false);
    expect(await uploadsAt(`images/${id}`)).toBe(0);
  }, 180_000);

  it("an image above the threshold that fails a check is refused by the importer, as one invocation refuses it", async () => {
    const base = join(dir, "base.raw");
    writeFileSync(base, Buffer.alloc(MiB));
    const file = join(dir, "backed.qcow2");
    qemuImg("create", "-f", "qcow2", "-b", base, "-F", "raw", file, String(VIRTUAL));
    const id = await create(
      { name: "fanout backed", disk_format: "qcow2", container_format: "bare" },
      readFileSync(file),
    );
    const image = await waitForStatus(id, "killed", getStack().tokens.alice, 60_000);
    expect(image.failure).toMatchObject({
      reason: "UNSAFE_IMAGE",
      message: expect.stringContaining("backing file"),
    });
    expect(await logged(id, "import fanned out")).toHaveLength(0);
  }, 90_000);
});
