import { createHash, randomBytes, randomUUID } from "node:crypto";
import { beforeEach, describe, expect, it } from "vitest";
import { imageKey, stagingKey } from "../../../functions/core/image/image.ts";
import { createImageService } from "../../../functions/core/images.ts";
import { createImporter } from "../../../functions/core/import/import-uploaded-image.ts";
import { fixedClock, MemoryImages, MemoryObjects, silentLog } from "../fakes.ts";

const alice = { userId: "alice", projectId: "p-alice", roles: ["member"] };
const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");

describe("importStagedObject", () => {
  let images: MemoryImages;
  let objects: MemoryObjects;
  let clock: ReturnType<typeof fixedClock>;
  let service: ReturnType<typeof createImageService>;
  let importer: ReturnType<typeof createImporter>;

  beforeEach(() => {
    images = new MemoryImages();
    objects = new MemoryObjects(777);
    clock = fixedClock();
    const deps = { images, objects, clock, log: silentLog };
    service = createImageService({
      ...deps,
      newId: randomUUID,
      uploadUrlTtlSeconds: 60,
      downloadUrlTtlSeconds: 60,
    });
    importer = createImporter({
      ...deps,
      osHashAlgo: "sha512",
      leaseSeconds: 60,
      progressIntervalMs: 0,
      policy: {
        preferredFormat: "raw",
        acceptedFormats: ["raw", "iso"],
        maxVirtualSize: 2 ** 40,
        maxGzipRatio: 64,
      },
    });
  });

  async function staged(bytes: Uint8Array, extra: Parameters<typeof service.create>[0] = {}) {
    const { image } = await service.create({ name: "x", ...extra }, alice);
    objects.objects.set(stagingKey(image.id), bytes);
    return image.id;
  }

  it("stores the bytes and records their size and digests", async () => {
    const bytes = randomBytes(10_000);
    const id = await staged(bytes, { upload_size: bytes.length, upload_sha256: hex("sha256", bytes) });
    const out = await importer.importStagedObject(stagingKey(id));
    expect(out.outcome).toBe("active");
    const image = await images.get(id);
    expect(image).toMatchObject({
      status: "active",
      size: bytes.length,
      checksum: hex("md5", bytes),
      os_hash_algo: "sha512",
      os_hash_value: hex("sha512", bytes),
      failure: null,
    });
    expect(Buffer.compare(objects.objects.get(imageKey(id)) ?? Buffer.alloc(0), bytes)).toBe(0);
    expect(objects.objects.has(stagingKey(id))).toBe(false);
  });

  it("a duplicate event after the import changes nothing", async () => {
    const id = await staged(randomBytes(100));
    await importer.importStagedObject(stagingKey(id));
    const before = await images.get(id);
    objects.objects.set(stagingKey(id), randomBytes(50));
    const again = await importer.importStagedObject(stagingKey(id));
    expect(again.outcome).toBe("ignored");
    expect(await images.get(id)).toEqual(before);
    expect(objects.objects.has(stagingKey(id))).toBe(false);
  });

  it("kills the image with DIGEST_MISMATCH and keeps nothing", async () => {
    const id = await staged(randomBytes(5000), { upload_sha256: "0".repeat(64) });
    const out = await importer.importStagedObject(stagingKey(id));
    expect(out.outcome).toBe("killed");
    const image = await images.get(id);
    expect(image?.status).toBe("killed");
    expect(image?.failure?.reason).toBe("DIGEST_MISMATCH");
    expect(image?.failure?.message).toContain("0".repeat(64));
    expect(objects.objects.has(imageKey(id))).toBe(false);
    expect(objects.objects.has(stagingKey(id))).toBe(false);
  });

  it("kills the image with SIZE_MISMATCH when the upload differs from the declared size", async () => {
    const id = await staged(randomBytes(100), { upload_size: 101 });
    await importer.importStagedObject(stagingKey(id));
    expect((await images.get(id))?.failure?.reason).toBe("SIZE_MISMATCH");
  });

  it("refuses an empty upload", async () => {
    const id = await staged(new Uint8Array(0));
    await importer.importStagedObject(stagingKey(id));
    expect((await images.get(id))?.failure?.reason).toBe("EMPTY_UPLOAD");
  });

  it("gives the image back to queued on a transient read failure, so a retry succeeds", async () => {
    const bytes = randomBytes(5000);
    const id = await staged(bytes);
    objects.failReadAfter = 2000;
    await expect(importer.importStagedObject(stagingKey(id))).rejects.toThrow("connection reset");
    expect((await images.get(id))?.status).toBe("queued");
    expect(objects.objects.has(imageKey(id))).toBe(false);
    objects.failReadAfter = undefined;
    expect((await importer.importStagedObject(stagingKey(id))).outcome).toBe("active");
  });

  it("ignores events for unknown images, foreign keys and vanished objects", async () => {
    expect((await importer.importStagedObject(`staging/${randomUUID()}/upload`)).outcome).toBe("ignored");
    expect((await importer.importStagedObject("images/whatever")).outcome).toBe("ignored");
    const id = await staged(randomBytes(10));
    objects.objects.delete(stagingKey(id));
    expect((await importer.importStagedObject(stagingKey(id))).outcome).toBe("ignored");
    expect((await images.get(id))?.status).toBe("queued");
  });

  it("an event while another importer holds the lease is ignored; after the lease expires it takes over", async () => {
    const id = await staged(randomBytes(10));
    await images.transition(id, "startImport", {
      import_lease_until: new Date(clock.now().getTime() + 60_000).toISOString(),
    });
    expect((await importer.importStagedObject(stagingKey(id))).outcome).toBe("ignored");
    clock.advance(61_000);
    expect((await importer.importStagedObject(stagingKey(id))).outcome).toBe("active");
  });

  it("an image deleted while importing does not come back, and its output is removed", async () => {
    const bytes = randomBytes(3000);
    const id = await staged(bytes);
    const realWrite = objects.write.bind(objects);
    objects.write = async (key, body) => {
      const r = await realWrite(key, body);
      await service.delete(id, alice);
      return r;
    };
    const out = await importer.importStagedObject(stagingKey(id));
    expect(out.outcome).toBe("ignored");
    expect(await images.get(id)).toBeUndefined();
    expect(objects.objects.has(imageKey(id))).toBe(false);
  });
});
