import { randomUUID } from "node:crypto";
import { beforeEach, describe, expect, it } from "vitest";
import { ForbiddenError, ImageNotFoundError } from "../../../functions/core/errors.ts";
import { stagingKey } from "../../../functions/core/image/image.ts";
import { createImageService } from "../../../functions/core/images.ts";
import { parseListQuery } from "../../../functions/core/list-query.ts";
import type { MultipartUploadService } from "../../../functions/core/uploads/multipart.ts";
import { fixedClock, MemoryImages, MemoryObjects, silentLog } from "../fakes.ts";

const alice = { userId: "alice", projectId: "p-alice", roles: ["member"] };
const aliceReader = { userId: "ann", projectId: "p-alice", roles: ["reader"] };
const bob = { userId: "bob", projectId: "p-bob", roles: ["member"] };
const admin = { userId: "admin", projectId: "p-admin", roles: ["admin", "member"] };

describe("image service", () => {
  let images: MemoryImages;
  let objects: MemoryObjects;
  let service: ReturnType<typeof createImageService>;
  beforeEach(() => {
    images = new MemoryImages();
    objects = new MemoryObjects();
    service = createImageService({
      images,
      objects,
      clock: fixedClock(),
      log: silentLog,
      newId: randomUUID,
      uploadUrlTtlSeconds: 600,
      downloadUrlTtlSeconds: 60,
    });
  });

  it("creates a queued image owned by the caller's project, with an upload link for the staging key", async () => {
    const view = await service.create({ name: "n", upload_size: 42 }, alice);
    expect(view.image).toMatchObject({
      status: "queued",
      owner: "p-alice",
      visibility: "shared",
      upload_size: 42,
    });
    expect(view.upload).toMatchObject({
      method: "PUT",
      url: expect.stringContaining(stagingKey(view.image.id)),
      headers: { "Content-Length": "42" },
    });
  });

  it("shows the upload link only to those who may upload, and only while queued", async () => {
    const { image } = await service.create({ name: "n", visibility: "community" }, alice);
    expect((await service.show(image.id, alice)).upload).toBeDefined();
    expect((await service.show(image.id, admin)).upload).toBeDefined();
    expect((await service.show(image.id, bob)).upload).toBeUndefined();
    expect((await service.show(image.id, aliceReader)).upload).toBeUndefined();
    await images.transition(image.id, "startImport", {});
    expect((await service.show(image.id, alice)).upload).toBeUndefined();
  });

  it("hides private and shared images from other projects with a not-found", async () => {
    const { image } = await service.create({ name: "n", visibility: "private" }, alice);
    await expect(service.show(image.id, bob)).rejects.toBeInstanceOf(ImageNotFoundError);
    await expect(service.delete(image.id, bob)).rejects.toBeInstanceOf(ImageNotFoundError);
    expect((await service.list(bob, parseListQuery([]))).images.map((i) => i.id)).not.toContain(image.id);
    expect((await service.list(alice, parseListQuery([]))).images.map((i) => i.id)).toContain(image.id);
  });

  it("refuses public visibility to non-admins", async () => {
    await expect(service.create({ visibility: "public" }, alice)).rejects.toBeInstanceOf(ForbiddenError);
    const { image } = await service.create({ visibility: "public" }, admin);
    expect((await service.list(bob, parseListQuery([]))).images.map((i) => i.id)).toContain(image.id);
  });

  it("delete removes the record and every object; protected images and readers are refused", async () => {
    const { image } = await service.create({ name: "n" }, alice);
    objects.objects.set(stagingKey(image.id), new Uint8Array(3));
    await expect(service.delete(image.id, aliceReader)).rejects.toBeInstanceOf(ForbiddenError);
    await service.delete(image.id, alice);
    expect(await images.get(image.id)).toBeUndefined();
    expect(objects.objects.size).toBe(0);
    const p = await service.create({ name: "p", protected: true }, alice);
    await expect(service.delete(p.image.id, alice)).rejects.toMatchObject({ reason: "PROTECTED" });
  });

  it("delete is refused (403 PROTECTED) when protection lands between its read and its write", async () => {
    const { image } = await service.create({ name: "n" }, alice);
    // An admin's PATCH protected=true lands right after the delete read the record.
    const get = images.get.bind(images);
    images.get = async (id: string) => {
      const read = await get(id);
      images.get = get;
      await images.update(id, { protected: true }, ["queued"]);
      return read;
    };
    await expect(service.delete(image.id, alice)).rejects.toMatchObject({ reason: "PROTECTED" });
    expect(await images.get(image.id)).toMatchObject({ status: "queued", protected: true });
  });

  it("delete takes an importing image, and aborts the multipart writes at its keys", async () => {
    const { image } = await service.create({ name: "n" }, alice);
    await images.transition(image.id, "startImport", {});
    objects.writes.set("w1", { key: `images/${image.id}`, initiated: "", parts: new Map() });
    objects.writes.set("w2", { key: `spool/${image.id}`, initiated: "", parts: new Map() });
    await service.delete(image.id, alice);
    expect(await images.get(image.id)).toBeUndefined();
    expect(objects.writes.size).toBe(0);
  });

  it("download needs data, and is refused for deactivated images except to admins", async () => {
    const { image } = await service.create({ name: "n" }, alice);
    await expect(service.downloadLink(image.id, alice)).rejects.toThrow(/no data/);
    await images.transition(image.id, "startImport", {});
    await images.transition(image.id, "finishImport", {});
    expect((await service.downloadLink(image.id, alice)).method).toBe("GET");
    await images.transition(image.id, "deactivate", {});
    await expect(service.downloadLink(image.id, alice)).rejects.toThrow(/deactivated/);
    expect((await service.downloadLink(image.id, admin)).url).toContain(image.id);
  });
});

describe("upload_size changes", () => {
  it("may change for a single-PUT image, but never into or within a multipart plan", async () => {
    const images = new MemoryImages();
    const discarded: string[] = [];
    // Only what the image service asks of the multipart service: is a size uploaded in parts, and the
    // discard on delete. Sizes above 100 bytes go in parts here.
    const multipart = {
      applies: (i: { upload_size: number | null }) => (i.upload_size ?? 0) > 100,
      prepare: async () => ({}),
      plan: () => undefined,
      discard: async (i: { id: string }) => void discarded.push(i.id),
    } as unknown as MultipartUploadService;
    const service = createImageService({
      images,
      objects: new MemoryObjects(),
      clock: fixedClock(),
      log: silentLog,
      newId: randomUUID,
      uploadUrlTtlSeconds: 600,
      downloadUrlTtlSeconds: 60,
      multipart,
    });
    const small = await service.create({ name: "s", upload_size: 10 }, alice);
    const grown = await service.update(
      small.image.id,
      [{ op: "replace", path: "/upload_size", value: 20 }],
      alice,
    );
    expect(grown.image.upload_size).toBe(20);
    await expect(
      service.update(small.image.id, [{ op: "replace", path: "/upload_size", value: 500 }], alice),
    ).rejects.toMatchObject({ reason: "UPLOAD_SIZE_FIXED" });
    const big = await service.create({ name: "b", upload_size: 1000 }, alice);
    await images.update(big.image.id, { multipart_upload_id: "u-1" }, ["queued"]);
    await expect(
      service.update(big.image.id, [{ op: "replace", path: "/upload_size", value: 50 }], alice),
    ).rejects.toMatchObject({ reason: "UPLOAD_SIZE_FIXED" });
    await service.delete(big.image.id, alice);
    expect(discarded).toEqual([big.image.id]);
  });
});
