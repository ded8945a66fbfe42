import { createHash, randomBytes, randomUUID } from "node:crypto";
import { beforeEach, describe, expect, it } from "vitest";
import { imageKey, stagingKey } from "../../../functions/core/image/image.ts";
import { HANDED_OVER } from "../../../functions/core/image/transitions.ts";
import { createImageService } from "../../../functions/core/images.ts";
import { createImporter, type ImporterDeps } from "../../../functions/core/import/import-uploaded-image.ts";
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
    importer = makeImporter();
  });

  /** An importer over the test's fakes; waiting for a lease runs the fake clock instead of real time. */
  function makeImporter(overrides: Partial<ImporterDeps> = {}) {
    return createImporter({
      images,
      objects,
      clock,
      log: silentLog,
      osHashAlgo: "sha512",
      leaseSeconds: 60,
      maxTakeovers: 3,
      progressIntervalMs: 0,
      policy: {
        preferredFormat: "raw",
        acceptedFormats: ["raw", "iso"],
        maxVirtualSize: 2 ** 40,
        maxGzipRatio: 64,
      },
      sleep: async (ms) => {
        clock.advance(ms);
      },
      ...overrides,
    });
  }

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

  const leaseIn = (ms: number) => new Date(clock.now().getTime() + ms).toISOString();

  it("an event while a live importer renews its lease is a duplicate and is ignored", async () => {
    const id = await staged(randomBytes(10));
    await images.transition(id, "startImport", { import_lease_until: leaseIn(60_000) });
    // The holder's heartbeat: every wait of the second importer sees the lease renewed.
    const watcher = makeImporter({
      sleep: async (ms) => {
        clock.advance(ms);
        await images.update(id, { import_lease_until: leaseIn(60_000) }, ["importing"]);
      },
    });
    const out = await watcher.importStagedObject(stagingKey(id));
    expect(out).toMatchObject({ outcome: "ignored", why: expect.stringContaining("live importer") });
    expect((await images.get(id))?.status).toBe("importing");
  });

  it("an image whose importer died is taken over once its lease runs out unrenewed, and counted", async () => {
    const id = await staged(randomBytes(10));
    await images.transition(id, "startImport", { import_lease_until: leaseIn(60_000) });
    const started = clock.now().getTime();
    expect(await importer.importStagedObject(stagingKey(id))).toMatchObject({ outcome: "active" });
    // It waited out the dead importer's lease, no less.
    expect(clock.now().getTime() - started).toBeGreaterThanOrEqual(60_000);
    expect((await images.get(id))?.import_takeovers).toBe(1);
  });

  it("an image a web-download handed over is taken at once, not counted as a takeover", async () => {
    const id = await staged(randomBytes(10));
    await images.transition(id, "startImport", { import_lease_until: leaseIn(60_000) });
    await images.transition(id, "handOverImport", { import_lease_until: HANDED_OVER });
    const started = clock.now().getTime();
    expect(await importer.importStagedObject(stagingKey(id))).toMatchObject({ outcome: "active" });
    expect(clock.now().getTime() - started).toBeLessThan(1000);
    expect((await images.get(id))?.import_takeovers ?? 0).toBe(0);
  });

  it("a takeover ends a fan-out execution's hold on the image, so its later steps write nothing", async () => {
    const id = await staged(randomBytes(10));
    await images.transition(id, "startImport", {
      import_lease_until: leaseIn(-1),
      import_execution: `${id}-dead`,
    });
    expect(await importer.importStagedObject(stagingKey(id))).toMatchObject({ outcome: "active" });
    expect(await images.get(id)).toMatchObject({ import_execution: null, import_fanout: null });
  });

  it("an image whose importers keep dying is killed with IMPORT_CRASHED after the allowed takeovers", async () => {
    const id = await staged(randomBytes(10));
    await images.transition(id, "startImport", {
      import_lease_until: leaseIn(-1),
      import_takeovers: 3,
    });
    const out = await importer.importStagedObject(stagingKey(id));
    expect(out.outcome).toBe("killed");
    expect(await images.get(id)).toMatchObject({
      status: "killed",
      failure: { reason: "IMPORT_CRASHED", message: expect.stringContaining("3 times") },
    });
    expect(objects.objects.has(stagingKey(id))).toBe(false);
  });

  it("renews its lease while it runs, and stops without touching the output when the lease is taken", async () => {
    const bytes = randomBytes(64 * 1024);
    const id = await staged(bytes);
    // A real-time heartbeat: a lease of 0.3 s renewed every 0.1 s, over an import held open for 0.5 s.
    const live = makeImporter({ leaseSeconds: 0.3, clock: { now: () => new Date() } });
    const leases = new Set<string>();
    // A raw upload is stored by storage's copy: the import is held open there.
    const realCopy = objects.copy.bind(objects);
    objects.copy = async (from, to, options) => {
      for (let i = 0; i < 5; i++) {
        await new Promise((r) => setTimeout(r, 100));
        leases.add(String((await images.get(id))?.import_lease_until));
      }
      return realCopy(from, to, options);
    };
    expect((await live.importStagedObject(stagingKey(id))).outcome).toBe("active");
    expect(leases.size).toBeGreaterThanOrEqual(3);

    const id2 = await staged(bytes);
    objects.copy = async (from, to, options) => {
      // Another importer takes the image over mid-import.
      await images.update(id2, { import_lease_until: "taken" }, ["importing"]);
      await new Promise((r) => setTimeout(r, 400));
      return realCopy(from, to, options);
    };
    objects.objects.set(imageKey(id2), new Uint8Array([1, 2, 3]));
    const out = await live.importStagedObject(stagingKey(id2));
    expect(out).toMatchObject({ outcome: "ignored", why: expect.stringContaining("taken over") });
    const after = await images.get(id2);
    expect(after).toMatchObject({ status: "importing", import_lease_until: "taken" });
    // The output key belongs to the importer that took over: left alone.
    expect(objects.objects.get(imageKey(id2))).toEqual(new Uint8Array([1, 2, 3]));
  });

  it("an image deleted while importing does not come back, and its output is removed", async () => {
    const bytes = randomBytes(3000);
    const id = await staged(bytes);
    const realCopy = objects.copy.bind(objects);
    objects.copy = async (from, to, options) => {
      const r = await realCopy(from, to, options);
      await service.delete(id, alice);
      return r;
    };
    const out = await importer.importStagedObject(stagingKey(id));
    expect(out.outcome).toBe("ignored");
    expect(await images.get(id)).toBeUndefined();
    expect(objects.objects.has(imageKey(id))).toBe(false);
  });

  it("stores a raw upload by storage's copy of the staged object, guarded by the ETag it read", async () => {
    const bytes = randomBytes(20_000);
    const id = await staged(bytes, { upload_sha256: hex("sha256", bytes) });
    const etag = (await objects.head(stagingKey(id)))?.etag;
    expect((await importer.importStagedObject(stagingKey(id))).outcome).toBe("active");
    expect(objects.copies).toEqual([{ from: stagingKey(id), to: imageKey(id), ifMatch: etag }]);
    // Nothing written through the importer.
    expect(objects.writeOptions.has(imageKey(id))).toBe(false);
    expect(Buffer.compare(objects.objects.get(imageKey(id)) ?? Buffer.alloc(0), bytes)).toBe(0);
    expect(await images.get(id)).toMatchObject({
      status: "active",
      checksum: hex("md5", bytes),
      os_hash_value: hex("sha512", bytes),
    });
  });

  it("an upload replaced after it was read is not copied: the image goes back to queued for the new bytes", async () => {
    const first = randomBytes(20_000);
    const second = randomBytes(20_000);
    const id = await staged(first);
    const realCopy = objects.copy.bind(objects);
    objects.copy = async (from, to, options) => {
      objects.objects.set(from, second);
      return realCopy(from, to, options);
    };
    await expect(importer.importStagedObject(stagingKey(id))).rejects.toThrow(/replaced/);
    expect(objects.objects.has(imageKey(id))).toBe(false);
    expect(await images.get(id)).toMatchObject({ status: "queued", checksum: null });
    // The retry imports the bytes now staged.
    objects.copy = realCopy;
    expect((await importer.importStagedObject(stagingKey(id))).outcome).toBe("active");
    expect(await images.get(id)).toMatchObject({ status: "active", checksum: hex("md5", second) });
  });
});
