import { createHash, randomBytes, randomUUID } from "node:crypto";
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { beforeAll, describe, expect, it } from "vitest";
import { DynamoQuotaStore } from "../../functions/adapters/dynamodb/quota-store.ts";
import { S3MultipartUploads } from "../../functions/adapters/s3/multipart.ts";
import { contentMd5ForDeletes, S3ObjectStore } from "../../functions/adapters/s3/object-store.ts";
import { stagingKey, stagingPrefix } from "../../functions/core/image/image.ts";
import type { ListedVersion, Logger } from "../../functions/core/ports.ts";
import { UNLIMITED } from "../../functions/core/quota.ts";
import { createSweeper } from "../../functions/core/sweep.ts";
import { MIB } from "../../functions/core/uploads/plan.ts";
import { directImport } from "./setup/direct-import.ts";
import { getStack, itemClient, s3Client } from "./setup/stack.ts";

// The sweeper deletes what a lost storage event left on the key of an upload an image keeps as its data:
// the versions a client wrote to the upload link after the import. Real MinIO and DynamoDB Local, on a
// bucket of its own that keeps versions and sends no events, so every later write here is one whose event
// was lost.

const s3 = s3Client();
const bucket = `hangar-sweep-${randomUUID().slice(0, 8)}`;
const HOUR = 3600_000;
const md5 = (b: Uint8Array) => createHash("md5").update(b).digest("hex");
const quiet: Logger = { info: () => {}, warn: () => {}, error: () => {} };

function setup() {
  const info = getStack();
  const objects = new S3ObjectStore(
    { bucket, region: info.region, endpoint: info.s3Endpoint, partSize: 8 * MIB },
    contentMd5ForDeletes(s3Client()),
  );
  const uploads = new S3MultipartUploads(
    { bucket, region: info.region, endpoint: info.s3Endpoint },
    s3Client(),
  );
  const direct = directImport(objects, {
    log: quiet,
    acceptedFormats: ["raw", "iso"],
    uploadUrlTtlSeconds: 600,
  });
  const finished: Record<string, unknown>[] = [];
  /** A sweep as if run at `at`; abandonment after an hour. */
  const sweepAt = (at: number) =>
    createSweeper({
      images: direct.images,
      objects,
      uploads,
      clock: { now: () => new Date(at) },
      log: {
        ...quiet,
        info: (message, fields) => {
          if (message === "sweep finished") finished.push(fields ?? {});
        },
      },
      abandonAfterSeconds: 3600,
      // The table is shared with other test files: this sweep must never judge their imports stalled.
      stalledImportGraceSeconds: 100 * 365 * 24 * 3600,
    }).sweep();
  const quota = new DynamoQuotaStore(itemClient(), info.table, UNLIMITED);
  return { ...direct, objects, sweepAt, finished, quota };
}

/** Every version and delete marker under `prefix`, as version ids, newest first per key. */
async function versions(prefix: string): Promise<string[]> {
  const out = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix }));
  return [...(out.Versions ?? []), ...(out.DeleteMarkers ?? [])].map((v) => v.VersionId ?? "").sort();
}

async function download(url: string): Promise<Buffer> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

beforeAll(async () => {
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  await s3.send(
    new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: "Enabled" } }),
  );
});

describe("sweeping a kept upload's key", () => {
  it("deletes versions written over it once past the cutoff, never the kept one, record and usage untouched", async () => {
    const { images, service, importer, sweepAt, finished, quota, objects } = setup();
    const caller = { userId: "alice", projectId: `p-sweep-${randomUUID().slice(0, 8)}`, roles: ["member"] };
    const bytes = randomBytes(3 * MIB + 7);
    const { image, upload } = await service.create({ name: "kept", disk_format: "raw" }, caller);
    const link = upload as { url: string; headers: Record<string, string> };
    const put = await fetch(link.url, { method: "PUT", headers: link.headers, body: bytes });
    expect(put.status).toBe(200);
    const kept = put.headers.get("x-amz-version-id") ?? "";
    const key = stagingKey(image.id);
    expect((await importer.importStagedObject(key, kept)).outcome).toBe("active");
    const before = await images.get(image.id);
    expect(before?.stored_object).toEqual({ key, version_id: kept });
    const usage = await quota.usage(caller.projectId);

    // What a PUT to the link after the import leaves when its event is lost, and a delete marker over it.
    const extra = (await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: randomBytes(MIB) })))
      .VersionId;
    const marker = (await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }))).VersionId;
    expect(extra).toMatch(/.+/);
    expect(marker).toMatch(/.+/);
    const all = [kept, extra, marker].sort();
    expect(await versions(stagingPrefix(image.id))).toEqual(all);

    // Within the cutoff its event may still be on the way: nothing is deleted.
    const early = await sweepAt(Date.now());
    expect(early.deletedVersions).toBe(0);
    expect(await versions(stagingPrefix(image.id))).toEqual(all);

    const late = await sweepAt(Date.now() + 2 * HOUR);
    expect(late.deletedVersions).toBe(2);
    expect(finished.at(-1)).toMatchObject({ deletedVersions: 2 });
    expect(await versions(stagingPrefix(image.id))).toEqual([kept]);
    expect(await images.get(image.id)).toEqual(before);
    expect(await quota.usage(caller.projectId)).toEqual(usage);
    const served = await download((await service.downloadLink(image.id, caller)).url);
    expect(md5(served)).toBe(md5(bytes));
    expect(md5(served)).toBe(before?.checksum);

    // Nothing left to delete: a second sweep finds nothing, and the image deletes as before.
    expect((await sweepAt(Date.now() + 2 * HOUR)).deletedVersions).toBe(0);
    await service.delete(image.id, caller);
    expect(await versions(stagingPrefix(image.id))).toEqual([]);
    expect(await objects.head(key)).toBeUndefined();
  });
});

describe("the store's listing of versions", () => {
  it("lists every version and delete marker under a prefix, across pages, with their times", async () => {
    const { objects } = setup();
    const prefix = `staging/${randomUUID()}/`;
    const made: string[] = [];
    for (const name of ["a", "a", "b"]) {
      const out = await s3.send(
        new PutObjectCommand({ Bucket: bucket, Key: `${prefix}${name}`, Body: randomBytes(10) }),
      );
      made.push(`${prefix}${name}@${out.VersionId}`);
    }
    const marker = (await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${prefix}b` }))).VersionId;
    const listed: ListedVersion[] = [];
    for await (const v of objects.listVersions(prefix, 1)) listed.push(v);

    expect(listed.map((v) => `${v.key}@${v.versionId}`).sort()).toEqual(
      [...made, `${prefix}b@${marker}`].sort(),
    );
    expect(listed.filter((v) => v.deleteMarker).map((v) => v.versionId)).toEqual([marker]);
    for (const v of listed)
      expect(Math.abs(Date.parse(v.lastModified ?? "") - Date.now())).toBeLessThan(HOUR);
  });
});
