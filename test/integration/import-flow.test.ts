import { createHash, randomBytes } from "node:crypto";
import {
  HeadObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { describe, expect, it } from "vitest";
import { api, getStack, s3Client, waitForStatus } from "./setup/stack.ts";

const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");

interface Upload {
  method: string;
  url: string;
  headers: Record<string, string>;
  expires_at: string;
}
type Image = Record<string, unknown> & { id: string; status: string; upload: Upload | null };

async function createImage(body: Record<string, unknown>, token = getStack().tokens.alice): Promise<Image> {
  const res = await api("/v2/images", { method: "POST", body: JSON.stringify(body) }, token);
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as Image;
}

/** Follows the link exactly as a client would: its method, its URL, its headers. */
async function follow(upload: Upload, body: Uint8Array, extraHeaders: Record<string, string> = {}) {
  return fetch(upload.url, { method: upload.method, headers: { ...upload.headers, ...extraHeaders }, body });
}

async function keys(prefix: string): Promise<string[]> {
  const out = await s3Client().send(new ListObjectsV2Command({ Bucket: getStack().bucket, Prefix: prefix }));
  return (out.Contents ?? []).map((o) => o.Key ?? "");
}

/** Every version (and delete marker) under `prefix`, as `key@version`. */
async function versions(prefix: string): Promise<string[]> {
  const out = await s3Client().send(
    new ListObjectVersionsCommand({ Bucket: getStack().bucket, Prefix: prefix }),
  );
  return [...(out.Versions ?? []), ...(out.DeleteMarkers ?? [])].map((v) => `${v.Key}@${v.VersionId}`);
}

describe("create → presigned upload → event → import → active", () => {
  it("an image uploaded through its link becomes active with the digests of its bytes", async () => {
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    const created = await createImage({
      name: "flow",
      disk_format: "raw",
      container_format: "bare",
      upload_size: bytes.length,
      upload_sha256: hex("sha256", bytes),
    });
    expect(created.status).toBe("queued");
    expect(created.upload?.method).toBe("PUT");
    expect(created.upload?.url).not.toMatch(/x-amz-checksum|x-amz-sdk-checksum/i);
    expect(created.upload?.url.startsWith(getStack().s3Endpoint)).toBe(true);

    const put = await follow(created.upload as Upload, bytes);
    expect(put.status, await put.text()).toBe(200);

    const image = await waitForStatus(created.id, "active", getStack().tokens.alice);
    expect(image).toMatchObject({
      size: bytes.length,
      checksum: hex("md5", bytes),
      os_hash_algo: "sha512",
      os_hash_value: hex("sha512", bytes),
      upload: null,
      failure: null,
    });
    // An upload in an accepted format is the image's data where it was uploaded: one version, nothing
    // under images/.
    const stored = await s3Client().send(
      new HeadObjectCommand({ Bucket: getStack().bucket, Key: `staging/${created.id}/upload` }),
    );
    expect(stored.ContentLength).toBe(bytes.length);
    expect(await versions(`staging/${created.id}/`)).toEqual([
      `staging/${created.id}/upload@${stored.VersionId}`,
    ]);
    expect(await versions(`images/${created.id}`)).toEqual([]);
  });

  it("a second upload after the import changes nothing and its object is removed", async () => {
    const bytes = randomBytes(4096);
    const created = await createImage({ name: "twice" });
    const put = await follow(created.upload as Upload, bytes);
    const kept = `staging/${created.id}/upload@${put.headers.get("x-amz-version-id")}`;
    const first = await waitForStatus(created.id, "active", getStack().tokens.alice);
    // The link is still within its lifetime: a late or repeated upload fires another event.
    const again = await follow(created.upload as Upload, randomBytes(4096));
    expect(again.status).toBe(200);
    // Its version is deleted; the image's own stays.
    await expect.poll(() => versions(`staging/${created.id}/`), { timeout: 15_000 }).toEqual([kept]);
    const after = await waitForStatus(created.id, "active", getStack().tokens.alice);
    expect(after.checksum).toBe(first.checksum);
    expect(after.checksum).toBe(hex("md5", bytes));
    const file = await api(`/v2/images/${created.id}/file`, {}, getStack().tokens.alice);
    const downloaded = await fetch(file.headers.get("location") ?? "");
    expect(Buffer.compare(Buffer.from(await downloaded.arrayBuffer()), bytes)).toBe(0);
  });

  it("an upload for a deleted image imports nothing", async () => {
    const created = await createImage({ name: "gone" });
    const del = await api(`/v2/images/${created.id}`, { method: "DELETE" }, getStack().tokens.alice);
    expect(del.status).toBe(204);
    const put = await follow(created.upload as Upload, randomBytes(2048));
    expect(put.status).toBe(200);
    await expect.poll(() => versions(`staging/${created.id}/`), { timeout: 15_000 }).toEqual([]);
    expect(await versions(`images/${created.id}`)).toEqual([]);
    const show = await api(`/v2/images/${created.id}`, {}, getStack().tokens.alice);
    expect(show.status).toBe(404);
  });

  it("storage refuses a body whose length differs from the declared upload_size; the image stays queued", async () => {
    const created = await createImage({ name: "short", upload_size: 1000 });
    expect(created.upload?.headers["Content-Length"]).toBe("1000");
    const put = await fetch((created.upload as Upload).url, { method: "PUT", body: randomBytes(999) });
    expect(put.status).toBeGreaterThanOrEqual(400);
    expect(await keys(`staging/${created.id}/`)).toEqual([]);
    const show = (await (await api(`/v2/images/${created.id}`, {}, getStack().tokens.alice)).json()) as Image;
    expect(show.status).toBe("queued");
    expect(show.upload?.url).toBeTruthy();
  });

  it("an upload whose sha256 differs from the declared one ends killed with DIGEST_MISMATCH", async () => {
    const bytes = randomBytes(10_000);
    const created = await createImage({ name: "bad-digest", upload_sha256: hex("sha256", randomBytes(8)) });
    await follow(created.upload as Upload, bytes);
    const image = await waitForStatus(created.id, "killed", getStack().tokens.alice);
    expect(image.failure).toMatchObject({ reason: "DIGEST_MISMATCH" });
    expect(String((image.failure as { message: string }).message)).toContain(hex("sha256", bytes));
    expect(await versions(`images/${created.id}`)).toEqual([]);
    // The refused upload is deleted after the status write.
    await expect.poll(() => versions(`staging/${created.id}/`), { timeout: 15_000 }).toEqual([]);
  });

  it("an object written under staging/ by other means than the link still imports (the event is the trigger)", async () => {
    const bytes = randomBytes(5000);
    const created = await createImage({ name: "direct" });
    await s3Client().send(
      new PutObjectCommand({ Bucket: getStack().bucket, Key: `staging/${created.id}/upload`, Body: bytes }),
    );
    const image = await waitForStatus(created.id, "active", getStack().tokens.alice);
    expect(image.checksum).toBe(hex("md5", bytes));
  });

  it("another project cannot see the image, nor its upload link; the owner's listing shows it", async () => {
    const created = await createImage({ name: "mine", visibility: "private" });
    const asBob = await api(`/v2/images/${created.id}`, {}, getStack().tokens.bob);
    expect(asBob.status).toBe(404);
    const body = (await asBob.json()) as { error: { code: number; message: string } };
    expect(body.error).toMatchObject({ code: 404, message: `No image found with ID ${created.id}` });
    const bobList = (await (await api("/v2/images?limit=1000", {}, getStack().tokens.bob)).json()) as {
      images: Image[];
    };
    expect(bobList.images.map((i) => i.id)).not.toContain(created.id);
    const aliceList = (await (await api("/v2/images?limit=1000", {}, getStack().tokens.alice)).json()) as {
      images: Image[];
    };
    expect(aliceList.images.map((i) => i.id)).toContain(created.id);
  });
});
