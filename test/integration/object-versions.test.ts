import { randomBytes, randomUUID } from "node:crypto";
import {
  CreateBucketCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { beforeAll, describe, expect, it } from "vitest";
import { contentMd5ForDeletes, S3ObjectStore } from "../../functions/adapters/s3/object-store.ts";
import { MIB } from "../../functions/core/uploads/plan.ts";
import { getStack, s3Client } from "./setup/stack.ts";

// The object store against real MinIO, in a bucket that keeps versions (as the stack's does) and in one
// that never did: every delete removes real versions, never only hides them behind a delete marker.
const s3 = s3Client();
const versioned = `hangar-versions-${randomUUID().slice(0, 8)}`;
const plain = `hangar-plain-${randomUUID().slice(0, 8)}`;

function store(bucket: string) {
  const info = getStack();
  return new S3ObjectStore(
    { bucket, region: info.region, endpoint: info.s3Endpoint, partSize: 8 * MIB },
    contentMd5ForDeletes(s3Client()),
  );
}

async function put(bucket: string, key: string, body: Uint8Array): Promise<string | undefined> {
  return (await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }))).VersionId;
}

/** Every version and delete marker under `prefix`, as `key@version`. */
async function versionsUnder(bucket: string, prefix: string): Promise<string[]> {
  const out = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix }));
  return [...(out.Versions ?? []), ...(out.DeleteMarkers ?? [])].map((v) => `${v.Key}@${v.VersionId}`);
}

async function readAll(iterable: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const c of iterable) chunks.push(c);
  return Buffer.concat(chunks);
}

beforeAll(async () => {
  await s3.send(new CreateBucketCommand({ Bucket: versioned }));
  await s3.send(
    new PutBucketVersioningCommand({ Bucket: versioned, VersioningConfiguration: { Status: "Enabled" } }),
  );
  await s3.send(new CreateBucketCommand({ Bucket: plain }));
});

describe("object versions", () => {
  it("head names the version; reads, ranged reads and links of that version ignore later writes", async () => {
    const objects = store(versioned);
    const key = `staging/${randomUUID()}/upload`;
    const first = randomBytes(64 * 1024);
    await put(versioned, key, first);
    const info = await objects.head(key);
    expect(info?.versionId).toMatch(/.+/);
    const versionId = info?.versionId ?? "";
    await put(versioned, key, randomBytes(64 * 1024));

    expect(Buffer.compare(await readAll(objects.read(key, undefined, { versionId })), first)).toBe(0);
    const range = await objects.readRange(key, 100, 50, undefined, { versionId });
    expect(Buffer.compare(Buffer.from(range), first.subarray(100, 150))).toBe(0);
    const link = await objects.presignGet(key, { expiresInSeconds: 60, versionId });
    const downloaded = Buffer.from(await (await fetch(link.url)).arrayBuffer());
    expect(Buffer.compare(downloaded, first)).toBe(0);
  });

  it("delete without a version removes every version and leaves no delete marker", async () => {
    const objects = store(versioned);
    const key = `images/${randomUUID()}`;
    await put(versioned, key, randomBytes(1000));
    await put(versioned, key, randomBytes(1000));
    expect(await versionsUnder(versioned, key)).toHaveLength(2);
    await objects.delete(key);
    expect(await versionsUnder(versioned, key)).toEqual([]);
    // Nothing there: still fine.
    await objects.delete(key);
  });

  it("delete of one version removes only it; deleteOtherVersions keeps only the one named", async () => {
    const objects = store(versioned);
    const key = `staging/${randomUUID()}/upload`;
    const v1 = (await put(versioned, key, randomBytes(1000))) ?? "";
    const v2 = (await put(versioned, key, randomBytes(1000))) ?? "";
    const v3 = (await put(versioned, key, randomBytes(1000))) ?? "";
    await objects.delete(key, v3);
    expect(await versionsUnder(versioned, key)).toEqual(
      expect.arrayContaining([`${key}@${v1}`, `${key}@${v2}`]),
    );
    expect(await versionsUnder(versioned, key)).toHaveLength(2);
    // The version is gone already: still fine.
    await objects.delete(key, v3);
    await objects.deleteOtherVersions(key, v1);
    expect(await versionsUnder(versioned, key)).toEqual([`${key}@${v1}`]);
    // A key beside it that shares its beginning is not touched.
    await put(versioned, `${key}-other`, randomBytes(10));
    await objects.delete(key);
    expect(await versionsUnder(versioned, key)).toEqual([expect.stringMatching(/-other@/)]);
  });

  it("deletePrefix removes every version of every key under it, in pages", async () => {
    const objects = store(versioned);
    const prefix = `staging/${randomUUID()}/`;
    for (let i = 0; i < 3; i++) {
      await put(versioned, `${prefix}k${i}`, randomBytes(10));
      await put(versioned, `${prefix}k${i}`, randomBytes(10));
    }
    expect(await versionsUnder(versioned, prefix)).toHaveLength(6);
    await objects.deletePrefix(prefix, 2);
    expect(await versionsUnder(versioned, prefix)).toEqual([]);
  });

  it("in a bucket that never kept versions, deletes still delete and head names no version", async () => {
    const objects = store(plain);
    const key = `images/${randomUUID()}`;
    await put(plain, key, randomBytes(1000));
    expect((await objects.head(key))?.versionId).toBeUndefined();
    await objects.delete(key);
    expect(await objects.head(key)).toBeUndefined();
    const prefix = `staging/${randomUUID()}/`;
    await put(plain, `${prefix}a`, randomBytes(10));
    await objects.deletePrefix(prefix);
    expect(await versionsUnder(plain, prefix)).toEqual([]);
  });
});
