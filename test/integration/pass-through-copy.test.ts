import { createHash, randomBytes, randomUUID } from "node:crypto";
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { beforeAll, describe, expect, it } from "vitest";
import { copyObject, copyParts } from "../../functions/adapters/s3/copy.ts";
import { contentMd5ForDeletes, S3ObjectStore } from "../../functions/adapters/s3/object-store.ts";
import { imageKey, stagingKey } from "../../functions/core/image/image.ts";
import {
  type CopyOptions,
  type Logger,
  ObjectChangedError,
  type WriteOptions,
} from "../../functions/core/ports.ts";
import { MIB } from "../../functions/core/uploads/plan.ts";
import { directImport } from "./setup/direct-import.ts";
import { getStack, s3Client } from "./setup/stack.ts";

// In storage that keeps no versions, an upload already in an accepted format (raw) cannot be kept where
// it was uploaded (the link could change it under the image): it is stored by storage's own copy of the
// staged object, and the importer reads it once (inspection, digests) and never writes the image's
// bytes. (Storage that keeps versions, as Hangar's bucket does, keeps it in place instead:
// pass-through-in-place.test.ts.) Real MinIO and DynamoDB Local; a bucket of its own, never versioned,
// with no notifications, so the stack's importer stays out of it.
const bucket = `hangar-copy-${randomUUID().slice(0, 8)}`;
const s3 = s3Client();
const alice = { userId: "alice", projectId: "p-copy", roles: ["member"] };
const md5 = (b: Uint8Array) => createHash("md5").update(b).digest("hex");

/** The real S3 store, counting what the importer asks of it. */
class CountingStore extends S3ObjectStore {
  readonly written: string[] = [];
  readonly copied: { from: string; to: string; options: CopyOptions }[] = [];
  /** Runs before each copy (a test replaces the staged object there). */
  beforeCopy: (() => Promise<void>) | undefined;
  override write(key: string, body: AsyncIterable<Uint8Array>, signal?: AbortSignal, options?: WriteOptions) {
    this.written.push(key);
    return super.write(key, body, signal, options);
  }
  override async copy(from: string, to: string, options: CopyOptions = {}) {
    this.copied.push({ from, to, options });
    await this.beforeCopy?.();
    return super.copy(from, to, options);
  }
}

const lines: string[] = [];
const log: Logger = {
  info: (m) => lines.push(m),
  warn: (m) => lines.push(m),
  error: (m) => lines.push(m),
};

function setup() {
  const info = getStack();
  const objects = new CountingStore(
    { bucket, region: info.region, endpoint: info.s3Endpoint, partSize: 8 * MIB },
    contentMd5ForDeletes(s3Client()),
  );
  return {
    objects,
    ...directImport(objects, { log: log, acceptedFormats: ["raw", "iso"], uploadUrlTtlSeconds: 60 }),
  };
}

async function stage(id: string, bytes: Uint8Array) {
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: stagingKey(id), Body: bytes }));
}

async function stored(key: string): Promise<Uint8Array | undefined> {
  try {
    const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return await out.Body?.transformToByteArray();
  } catch (err) {
    if ((err as { name?: string }).name === "NoSuchKey") return undefined;
    throw err;
  }
}

beforeAll(async () => {
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
});

describe("pass-through by storage copy, in storage that keeps no versions", () => {
  it("stores a raw upload byte for byte without writing it through the importer", async () => {
    const { objects, images, service, importer } = setup();
    // Above the size where the digests move to worker threads.
    const bytes = randomBytes(24 * MIB);
    const { image } = await service.create(
      {
        name: "raw",
        disk_format: "raw",
        upload_sha256: createHash("sha256").update(bytes).digest("hex"),
      },
      alice,
    );
    await stage(image.id, bytes);
    const etag = (await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: stagingKey(image.id) }))).ETag;

    expect((await importer.importStagedObject(stagingKey(image.id))).outcome).toBe("active");

    // One server-side copy, guarded by the ETag of the upload read; no write of image data at all.
    expect(objects.copied).toEqual([
      {
        from: stagingKey(image.id),
        to: imageKey(image.id),
        options: expect.objectContaining({ ifMatch: etag }),
      },
    ]);
    expect(objects.written).toEqual([]);
    expect(Buffer.compare(Buffer.from((await stored(imageKey(image.id))) ?? []), bytes)).toBe(0);
    expect(await stored(stagingKey(image.id))).toBeUndefined();
    expect(await images.get(image.id)).toMatchObject({
      status: "active",
      size: bytes.length,
      checksum: md5(bytes),
      os_hash_value: createHash("sha512").update(bytes).digest("hex"),
      converted: false,
    });
  });

  it("an upload replaced between its read and the copy stores nothing; the retry imports the new bytes", async () => {
    const { objects, images, service, importer } = setup();
    const first = randomBytes(12 * MIB);
    const second = randomBytes(12 * MIB);
    const { image } = await service.create({ name: "replaced", disk_format: "raw" }, alice);
    await stage(image.id, first);
    objects.beforeCopy = () => stage(image.id, second);

    await expect(importer.importStagedObject(stagingKey(image.id))).rejects.toBeInstanceOf(
      ObjectChangedError,
    );
    // Nothing unverified stored; the image waits for the retry (or the new upload's own event).
    expect(await stored(imageKey(image.id))).toBeUndefined();
    expect(await images.get(image.id)).toMatchObject({ status: "queued", checksum: null });
    expect(lines).toContain("staged upload replaced while importing, will be imported again");

    objects.beforeCopy = undefined;
    expect((await importer.importStagedObject(stagingKey(image.id))).outcome).toBe("active");
    expect(Buffer.compare(Buffer.from((await stored(imageKey(image.id))) ?? []), second)).toBe(0);
    expect(await images.get(image.id)).toMatchObject({ status: "active", checksum: md5(second) });
  });

  it("copies beside the read; a read that fails leaves nothing stored, whether the copy ended first or not", async () => {
    for (const copyDelayMs of [0, 400]) {
      const { objects, images, service, importer } = setup();
      const bytes = randomBytes(12 * MIB);
      const { image } = await service.create(
        // A declared digest the bytes do not have: the read fails, at its end.
        { name: `mismatch-${copyDelayMs}`, disk_format: "raw", upload_sha256: "0".repeat(64) },
        alice,
      );
      await stage(image.id, bytes);
      let copyStartedBeforeReadEnded = false;
      objects.beforeCopy = async () => {
        copyStartedBeforeReadEnded = (await images.get(image.id))?.checksum === null;
        await new Promise((r) => setTimeout(r, copyDelayMs));
      };

      expect((await importer.importStagedObject(stagingKey(image.id))).outcome).toBe("killed");
      expect(objects.copied).toHaveLength(1);
      expect(copyStartedBeforeReadEnded).toBe(true);
      expect(await stored(imageKey(image.id))).toBeUndefined();
      expect(await images.get(image.id)).toMatchObject({ status: "killed", checksum: null });
      const pending = await s3.send(
        new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: imageKey(image.id) }),
      );
      expect(pending.Uploads ?? []).toEqual([]);
    }
  });

  it("copies in parts (UploadPartCopy) under the same ETag guard", async () => {
    const bytes = randomBytes(12 * MIB + 5);
    const from = `staging/${randomUUID()}/upload`;
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: from, Body: bytes }));
    const etag = (await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: from }))).ETag;
    const parts = copyParts(bytes.length, 5 * MIB, 0);
    expect(parts?.length).toBe(3);
    const to = `images/${randomUUID()}`;
    const req = { client: s3, bucket, from, size: bytes.length, parts };
    await copyObject({ ...req, to, ifMatch: etag });
    expect(Buffer.compare(Buffer.from((await stored(to)) ?? []), bytes)).toBe(0);

    // A stale ETag fails the copy and leaves neither an object nor a multipart upload at the key.
    const other = `images/${randomUUID()}`;
    await expect(
      copyObject({ ...req, to: other, ifMatch: '"0123456789abcdef0123456789abcdef"' }),
    ).rejects.toBeInstanceOf(ObjectChangedError);
    expect(await stored(other)).toBeUndefined();
    const pending = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: other }));
    expect(pending.Uploads ?? []).toEqual([]);
  });
});
