import { beforeEach, describe, expect, it } from "vitest";
import {
  ConflictError,
  ForbiddenError,
  ImageNotFoundError,
  InvalidRequestError,
} from "../../../functions/core/errors.ts";
import type { Caller } from "../../../functions/core/image/access.ts";
import { stagingKey } from "../../../functions/core/image/image.ts";
import type { MultipartPlan } from "../../../functions/core/uploads/multipart.ts";
import { MIB } from "../../../functions/core/uploads/plan.ts";
import { multipartFixture } from "../fakes.ts";

const alice: Caller = { userId: "alice", projectId: "p-alice", roles: ["member"] };
const bob: Caller = { userId: "bob", projectId: "p-bob", roles: ["member"] };
const admin: Caller = { userId: "root", projectId: "p-admin", roles: ["admin"] };

const SIZE = 12 * MIB + 123; // three parts of 5 MiB: 5, 5, 2 MiB + 123 bytes

function setup() {
  const { common: _, ...fixture } = multipartFixture();
  return fixture;
}

const bytes = (n: number, fill: number) => new Uint8Array(n).fill(fill);

describe("multipart uploads", () => {
  let s: ReturnType<typeof setup>;
  let id: string;
  let uploadId: string;

  beforeEach(async () => {
    s = setup();
    const view = await s.service.create({ name: "big", upload_size: SIZE }, alice);
    id = view.image.id;
    uploadId = (await s.images.get(id))?.multipart_upload_id as string;
  });

  const putAll = (numbers: number[], sizes: Record<number, number> = {}) => {
    for (const n of numbers)
      s.storage.put(uploadId, n, bytes(sizes[n] ?? (n < 3 ? 5 * MIB : 2 * MIB + 123), n));
  };

  it("plans parts for a large declared size and starts the storage upload with the image", async () => {
    const view = await s.service.show(id, alice);
    const plan = view.upload as MultipartPlan;
    expect(plan).toMatchObject({
      method: "multipart",
      partSize: 5 * MIB,
      partCount: 3,
      partsUrl: `/v2/images/${id}/upload/parts`,
      completeUrl: `/v2/images/${id}/upload/complete`,
      cancelUrl: `/v2/images/${id}/upload/cancel`,
    });
    expect(s.storage.pending.get(uploadId)?.key).toBe(stagingKey(id));
  });

  it("keeps a single PUT for small uploads", async () => {
    const view = await s.service.create({ name: "small", upload_size: 8 * MIB }, alice);
    expect(view.upload?.method).toBe("PUT");
    expect((await s.images.get(view.image.id))?.multipart_upload_id).toBeUndefined();
  });

  it("signs any subset of parts with each part's exact length, as often as asked", async () => {
    const signed = await s.multipart.signParts(id, alice, [3, 1]);
    expect(signed.map((p) => [p.partNumber, p.size, p.headers["Content-Length"]])).toEqual([
      [3, 2 * MIB + 123, String(2 * MIB + 123)],
      [1, 5 * MIB, String(5 * MIB)],
    ]);
    expect(signed[0]?.url).toContain(`uploadId=${uploadId}`);
    expect(await s.multipart.signParts(id, admin, [1])).toHaveLength(1);
    await expect(s.multipart.signParts(id, alice, [4])).rejects.toThrow(InvalidRequestError);
    await expect(s.multipart.signParts(id, alice, [])).rejects.toThrow(InvalidRequestError);
  });

  it("lets only the owner's members and admins use the plan", async () => {
    await expect(s.multipart.signParts(id, bob, [1])).rejects.toThrow(ImageNotFoundError);
    await s.images.update(id, { visibility: "public" }, ["queued"]);
    await expect(s.multipart.signParts(id, bob, [1])).rejects.toThrow(ForbiddenError);
    await expect(s.multipart.listParts(id, bob)).rejects.toThrow(ForbiddenError);
  });

  it("lists stored parts so a client can resume", async () => {
    putAll([2]);
    const { layout, parts } = await s.multipart.listParts(id, alice);
    expect(layout).toEqual({ partSize: 5 * MIB, partCount: 3 });
    expect(parts.map((p) => [p.partNumber, p.size])).toEqual([[2, 5 * MIB]]);
  });

  it("refuses completion with missing parts, naming them", async () => {
    putAll([2]);
    const err = await s.multipart.complete(id, alice, {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    expect(err).toMatchObject({ reason: "MISSING_PARTS" });
    expect((err as Error).message).toContain("lacks 2 of 3 parts: 1, 3");
    expect(s.objects.objects.has(stagingKey(id))).toBe(false);
  });

  it("refuses completion when a part has the wrong size", async () => {
    putAll([1, 2, 3], { 3: 2 * MIB });
    await expect(s.multipart.complete(id, alice, {})).rejects.toMatchObject({
      reason: "PART_SIZE_MISMATCH",
      message: expect.stringContaining(`part 3 has ${2 * MIB} bytes, not ${2 * MIB + 123}`),
    });
  });

  it("completes: assembles the object, records the declared digest, forgets the upload id", async () => {
    putAll([1, 2, 3]);
    const sha = "ab".repeat(32);
    await s.multipart.complete(id, alice, { upload_sha256: sha.toUpperCase() });
    expect(s.objects.objects.get(stagingKey(id))?.byteLength).toBe(SIZE);
    const image = await s.images.get(id);
    expect(image?.upload_sha256).toBe(sha);
    expect(image?.multipart_upload_id).toBeNull();
    // Waiting for its import: no new upload can start over the staged object.
    await expect(s.multipart.signParts(id, alice, [1])).rejects.toMatchObject({ reason: "UPLOAD_COMPLETE" });
  });

  it("refuses a completion digest that contradicts the one declared at create", async () => {
    const view = await s.service.create(
      { name: "d", upload_size: SIZE, upload_sha256: "cd".repeat(32) },
      alice,
    );
    const other = (await s.images.get(view.image.id))?.multipart_upload_id as string;
    for (const n of [1, 2, 3]) s.storage.put(other, n, bytes(n < 3 ? 5 * MIB : 2 * MIB + 123, 0));
    await expect(
      s.multipart.complete(view.image.id, alice, { upload_sha256: "ab".repeat(32) }),
    ).rejects.toMatchObject({
      reason: "DIGEST_CONFLICT",
    });
  });

  it("cancels: aborts the storage upload and leaves the image queued with a fresh plan", async () => {
    putAll([1]);
    await s.multipart.cancel(id, alice);
    const image = await s.images.get(id);
    expect(image?.status).toBe("queued");
    expect(image?.multipart_upload_id).not.toBe(uploadId);
    expect(s.storage.pending.has(uploadId)).toBe(false);
    expect((await s.multipart.listParts(id, alice)).parts).toEqual([]);
  });

  it("restarts a storage upload on demand when the record holds none (after a sweep)", async () => {
    await s.storage.abort(stagingKey(id), uploadId);
    await s.images.update(id, { multipart_upload_id: null }, ["queued"]);
    expect((await s.multipart.listParts(id, alice)).parts).toEqual([]);
    const [part] = await s.multipart.signParts(id, alice, [1]);
    const fresh = (await s.images.get(id))?.multipart_upload_id;
    expect(fresh).toBeTruthy();
    expect(part?.url).toContain(`uploadId=${fresh}`);
  });

  it("takes no parts once the image left queued", async () => {
    await s.images.transition(id, "startImport", {});
    await expect(s.multipart.signParts(id, alice, [1])).rejects.toMatchObject({ reason: "NOT_QUEUED" });
    await expect(s.multipart.cancel(id, alice)).rejects.toMatchObject({ reason: "NOT_QUEUED" });
    expect((await s.service.show(id, alice)).upload).toBeUndefined();
  });
});
