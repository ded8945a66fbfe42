import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CreateBucketCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { contentMd5ForDeletes, S3ObjectStore } from "../../functions/adapters/s3/object-store.ts";
import { imageKey, stagingKey, stagingPrefix } from "../../functions/core/image/image.ts";
import type { CopyOptions, Logger, ReadOptions, WriteOptions } from "../../functions/core/ports.ts";
import { MIB } from "../../functions/core/uploads/plan.ts";
import { directImport } from "./setup/direct-import.ts";
import { qcow2Of } from "./setup/disk.ts";
import { api, getStack, s3Client, waitForStatus } from "./setup/stack.ts";

// An upload already in an accepted format is kept where it was uploaded: the image's data is the version
// of the staged object the importer read and verified, nothing is written or copied. Real MinIO and
// DynamoDB Local. The first part drives the importer directly on a bucket of its own that keeps versions
// (no notifications: the stack's importer stays out of it) with an operator who accepts qcow2 too; the
// last goes through the shared stack, its API and MinIO's own storage events.

const s3 = s3Client();
const bucket = `hangar-inplace-${randomUUID().slice(0, 8)}`;
const alice = { userId: "alice", projectId: "p-inplace", roles: ["member"] };
const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");
const quiet: Logger = { info: () => {}, warn: () => {}, error: () => {} };

/** The real S3 store, noting every write and copy the importer asks of it. */
class CountingStore extends S3ObjectStore {
  readonly written: string[] = [];
  readonly copied: string[] = [];
  /** Runs once, as the first whole read of an object starts (a test writes over the upload there). */
  onRead: (() => Promise<void>) | undefined;
  override async *read(key: string, signal?: AbortSignal, options?: ReadOptions) {
    const hook = this.onRead;
    this.onRead = undefined;
    await hook?.();
    yield* super.read(key, signal, options);
  }
  override write(key: string, body: AsyncIterable<Uint8Array>, signal?: AbortSignal, options?: WriteOptions) {
    this.written.push(key);
    return super.write(key, body, signal, options);
  }
  override copy(from: string, to: string, options?: CopyOptions) {
    this.copied.push(`${from} -> ${to}`);
    return super.copy(from, to, options);
  }
}

function setup() {
  const info = getStack();
  const objects = new CountingStore(
    { bucket, region: info.region, endpoint: info.s3Endpoint, partSize: 8 * MIB },
    contentMd5ForDeletes(s3Client()),
  );
  return {
    objects,
    ...directImport(objects, {
      log: quiet,
      acceptedFormats: ["raw", "iso", "qcow2"],
      uploadUrlTtlSeconds: 600,
    }),
  };
}

/** Every version and delete marker under `prefix`, as version ids. */
async function versions(prefix: string, inBucket = bucket): Promise<string[]> {
  const out = await s3.send(new ListObjectVersionsCommand({ Bucket: inBucket, Prefix: prefix }));
  return [...(out.Versions ?? []), ...(out.DeleteMarkers ?? [])].map((v) => v.VersionId ?? "");
}

/** PUTs `bytes` through a presigned link, as a client does; the new version's id. */
async function putThrough(upload: { url: string; headers: Record<string, string> }, bytes: Uint8Array) {
  const res = await fetch(upload.url, { method: "PUT", headers: upload.headers, body: bytes });
  expect(res.status, await res.text()).toBe(200);
  return res.headers.get("x-amz-version-id") ?? undefined;
}

async function download(url: string): Promise<Buffer> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

let dir: string;
let qcow2: Buffer;

beforeAll(async () => {
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  await s3.send(
    new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: "Enabled" } }),
  );
  dir = mkdtempSync(join(tmpdir(), "hangar-inplace-"));
  const disk = Buffer.alloc(4 * MIB);
  randomBytes(600 * 1024).copy(disk, 64 * 1024);
  qcow2 = qcow2Of(disk, dir);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("pass-through kept where it was uploaded", () => {
  for (const format of ["raw", "qcow2"] as const) {
    it(`a ${format} upload becomes active as the version read: nothing under images/, nothing written or copied`, async () => {
      const { objects, images, service, importer } = setup();
      // The raw one above the size where the digests move to worker threads.
      const bytes = format === "raw" ? randomBytes(24 * MIB) : qcow2;
      const { image, upload } = await service.create(
        { name: format, disk_format: format, upload_sha256: hex("sha256", bytes) },
        alice,
      );
      const version = await putThrough(upload as { url: string; headers: Record<string, string> }, bytes);
      expect(version).toMatch(/.+/);

      expect((await importer.importStagedObject(stagingKey(image.id), version)).outcome).toBe("active");

      expect(objects.written).toEqual([]);
      expect(objects.copied).toEqual([]);
      expect(await versions(imageKey(image.id))).toEqual([]);
      expect(await versions(stagingKey(image.id))).toEqual([version]);
      const record = await images.get(image.id);
      expect(record).toMatchObject({
        status: "active",
        disk_format: format,
        size: bytes.length,
        checksum: hex("md5", bytes),
        os_hash_value: hex("sha512", bytes),
        converted: false,
        stored_object: { key: stagingKey(image.id), version_id: version },
      });
      const link = await service.downloadLink(image.id, alice);
      expect(link.url).toContain(`versionId=${version}`);
      expect(Buffer.compare(await download(link.url), bytes)).toBe(0);
    });
  }

  it("a PUT to the upload link after active changes nothing; its version is deleted, never the verified one", async () => {
    const { images, service, importer } = setup();
    const bytes = randomBytes(2 * MIB);
    const { image, upload } = await service.create({ name: "overwritten", disk_format: "raw" }, alice);
    const link = upload as { url: string; headers: Record<string, string> };
    const verified = await putThrough(link, bytes);
    expect((await importer.importStagedObject(stagingKey(image.id), verified)).outcome).toBe("active");
    const before = await images.get(image.id);

    const other = randomBytes(2 * MIB);
    const later = await putThrough(link, other);
    expect(later).not.toBe(verified);
    // Until its event comes, downloads still serve the verified bytes.
    const url = (await service.downloadLink(image.id, alice)).url;
    expect(Buffer.compare(await download(url), bytes)).toBe(0);

    // The event of the later PUT: the image is not waiting for an upload.
    expect((await importer.importStagedObject(stagingKey(image.id), later)).outcome).toBe("ignored");
    expect(await versions(stagingPrefix(image.id))).toEqual([verified]);
    // The event that imported the image, delivered again, deletes nothing.
    expect((await importer.importStagedObject(stagingKey(image.id), verified)).outcome).toBe("ignored");
    expect(await versions(stagingPrefix(image.id))).toEqual([verified]);

    const after = await images.get(image.id);
    expect(after).toMatchObject({
      status: "active",
      checksum: before?.checksum,
      os_hash_value: before?.os_hash_value,
      size: before?.size,
      stored_object: before?.stored_object,
    });
    expect(Buffer.compare(await download((await service.downloadLink(image.id, alice)).url), bytes)).toBe(0);
  });

  it("an upload replaced while the import reads it is imported as the version read; the later one goes", async () => {
    const { objects, images, service, importer } = setup();
    const first = randomBytes(12 * MIB);
    const { image, upload } = await service.create({ name: "raced", disk_format: "raw" }, alice);
    const link = upload as { url: string; headers: Record<string, string> };
    const v1 = await putThrough(link, first);
    let v2: string | undefined;
    objects.onRead = async () => {
      v2 = await putThrough(link, randomBytes(12 * MIB));
    };
    expect((await importer.importStagedObject(stagingKey(image.id), v1)).outcome).toBe("active");
    expect(v2).toMatch(/.+/);
    expect((await importer.importStagedObject(stagingKey(image.id), v2)).outcome).toBe("ignored");
    expect(await images.get(image.id)).toMatchObject({
      checksum: hex("md5", first),
      stored_object: { key: stagingKey(image.id), version_id: v1 },
    });
    expect(await versions(stagingPrefix(image.id))).toEqual([v1]);
  });

  it("deleting the image removes every version of its data", async () => {
    const { images, service, importer } = setup();
    const { image, upload } = await service.create({ name: "deleted", disk_format: "raw" }, alice);
    const link = upload as { url: string; headers: Record<string, string> };
    const v1 = await putThrough(link, randomBytes(MIB));
    expect((await importer.importStagedObject(stagingKey(image.id), v1)).outcome).toBe("active");
    // A later PUT whose event has not come yet: a second version under the staging prefix.
    await putThrough(link, randomBytes(MIB));
    expect(await versions(stagingPrefix(image.id))).toHaveLength(2);

    await service.delete(image.id, alice);
    expect(await versions(stagingPrefix(image.id))).toEqual([]);
    expect(await versions(imageKey(image.id))).toEqual([]);
    expect(await images.get(image.id)).toBeUndefined();
  });

  it("an image from before versions were kept (data at images/<id>, no version) still downloads and deletes", async () => {
    const { images, service } = setup();
    const bytes = randomBytes(MIB);
    const { image } = await service.create({ name: "legacy", disk_format: "raw" }, alice);
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: imageKey(image.id), Body: bytes }));
    await images.transition(image.id, "startImport", {
      import_lease_until: new Date(Date.now() + 60_000).toISOString(),
    });
    await images.transition(image.id, "finishImport", {
      size: bytes.length,
      checksum: hex("md5", bytes),
      import_lease_until: null,
    });
    expect((await images.get(image.id))?.stored_object ?? null).toBeNull();
    const link = await service.downloadLink(image.id, alice);
    expect(link.url).not.toContain("versionId");
    expect(Buffer.compare(await download(link.url), bytes)).toBe(0);
    await service.delete(image.id, alice);
    expect(await versions(imageKey(image.id))).toEqual([]);
  });
});

describe("pass-through kept in place, through the stack's API and storage events", () => {
  it("downloads the verified bytes after a later PUT to the link, whose version the importer deletes", async () => {
    const { bucket: stackBucket, tokens } = getStack();
    const bytes = randomBytes(3 * MIB + 5);
    const res = await api(
      "/v2/images",
      { method: "POST", body: JSON.stringify({ name: "inplace-e2e", disk_format: "raw" }) },
      tokens.alice,
    );
    const created = (await res.json()) as {
      id: string;
      upload: { url: string; headers: Record<string, string> };
    };
    const verified = await putThrough(created.upload, bytes);
    const image = await waitForStatus(created.id, "active", tokens.alice);
    expect(image).toMatchObject({ checksum: hex("md5", bytes), os_hash_value: hex("sha512", bytes) });
    expect(await versions(imageKey(created.id), stackBucket)).toEqual([]);

    await putThrough(created.upload, randomBytes(MIB));
    // MinIO's event for the later version reaches the importer, which deletes that version.
    const deadline = Date.now() + 20_000;
    while ((await versions(stagingPrefix(created.id), stackBucket)).length > 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(await versions(stagingPrefix(created.id), stackBucket)).toEqual([verified]);

    const file = await api(`/v2/images/${created.id}/file`, {}, tokens.alice);
    expect(file.status).toBe(302);
    expect(Buffer.compare(await download(file.headers.get("location") ?? ""), bytes)).toBe(0);
    const shown = await api(`/v2/images/${created.id}`, {}, tokens.alice);
    expect(await shown.json()).toMatchObject({ status: "active", checksum: hex("md5", bytes) });

    // Reconciliation counts the kept upload as the image's stored data, not as an orphan.
    const rec = await api("/v2/quotas/reconcile?repair=false", { method: "POST" }, tokens.admin);
    expect(rec.status).toBe(200);
    const report = (await rec.json()) as { orphans: string[] };
    expect(report.orphans).not.toContain(`staging/${created.id}/upload`);

    expect((await api(`/v2/images/${created.id}`, { method: "DELETE" }, tokens.alice)).status).toBe(204);
    expect(await versions(stagingPrefix(created.id), stackBucket)).toEqual([]);
  });
});
