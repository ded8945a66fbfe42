import { describe, expect, it } from "vitest";
import type { Caller } from "../../../functions/core/image/access.ts";
import { imageKey, spoolKey, stagingKey } from "../../../functions/core/image/image.ts";
import { HANDED_OVER } from "../../../functions/core/image/transitions.ts";
import type { ListedVersion } from "../../../functions/core/ports.ts";
import { createSweeper, isOverwrite } from "../../../functions/core/sweep.ts";
import { MIB } from "../../../functions/core/uploads/plan.ts";
import { multipartFixture } from "../fakes.ts";

const alice: Caller = { userId: "alice", projectId: "p-alice", roles: ["member"] };
const HOUR = 3600_000;

function setup() {
  const { common, multipart: _, ...fixture } = multipartFixture();
  const sweeper = createSweeper({
    ...common,
    abandonAfterSeconds: 24 * 3600,
    stalledImportGraceSeconds: 3600,
  });
  return { ...fixture, sweeper };
}

describe("sweeper", () => {
  it("aborts an upload with no part for a day and resets its queued image's plan; keeps active ones", async () => {
    const s = setup();
    const idle = (await s.service.create({ name: "idle", upload_size: 12 * MIB }, alice)).image.id;
    const busy = (await s.service.create({ name: "busy", upload_size: 12 * MIB }, alice)).image.id;
    const idleUpload = (await s.images.get(idle))?.multipart_upload_id as string;
    const busyUpload = (await s.images.get(busy))?.multipart_upload_id as string;
    s.clock.advance(23 * HOUR);
    s.storage.put(busyUpload, 1, new Uint8Array(5 * MIB));
    s.clock.advance(2 * HOUR);

    const report = await s.sweeper.sweep();

    expect(report).toMatchObject({ abortedUploads: 1, resetImages: 1 });
    expect(s.storage.pending.has(idleUpload)).toBe(false);
    expect(s.storage.pending.has(busyUpload)).toBe(true);
    const image = await s.images.get(idle);
    expect(image).toMatchObject({ status: "queued", multipart_upload_id: null });
    // The plan is still offered; asking for parts starts a fresh storage upload.
    expect((await s.service.show(idle, alice)).upload?.method).toBe("multipart");
  });

  it("judges an upload without parts by the record's start when storage reports the listing time (MinIO)", async () => {
    const s = setup();
    const id = (await s.service.create({ name: "empty", upload_size: 12 * MIB }, alice)).image.id;
    const uploadId = (await s.images.get(id))?.multipart_upload_id as string;
    s.clock.advance(25 * HOUR);
    // MinIO's ListMultipartUploads gives the time of the listing as `Initiated`.
    const listPending = s.storage.listPending.bind(s.storage);
    s.storage.listPending = async (prefix: string) =>
      (await listPending(prefix)).map((u) => ({ ...u, initiated: s.clock.now().toISOString() }));
    expect(await s.sweeper.sweep()).toMatchObject({ abortedUploads: 1, resetImages: 1 });
    expect(s.storage.pending.has(uploadId)).toBe(false);
  });

  it("deletes staged objects left for a day by gone or queued images, not fresh ones", async () => {
    const s = setup();
    const gone = "00000000-0000-4000-8000-00000000aaaa";
    const queued = (await s.service.create({ name: "q" }, alice)).image.id;
    const fresh = (await s.service.create({ name: "f" }, alice)).image.id;
    const old = new Date(s.clock.now().getTime() - 25 * HOUR).toISOString();
    for (const id of [gone, queued]) {
      s.objects.objects.set(stagingKey(id), new Uint8Array(3));
      s.objects.modified.set(stagingKey(id), old);
    }
    s.objects.objects.set(stagingKey(fresh), new Uint8Array(3));
    s.objects.modified.set(stagingKey(fresh), s.clock.now().toISOString());

    expect(await s.sweeper.sweep()).toMatchObject({ deletedObjects: 2 });
    expect([...s.objects.objects.keys()]).toEqual([stagingKey(fresh)]);
  });

  it("never deletes the staged object an image keeps as its data, however old", async () => {
    const s = setup();
    const id = (await s.service.create({ name: "kept" }, alice)).image.id;
    const lease = new Date(s.clock.now().getTime() + 60_000).toISOString();
    await s.images.transition(id, "startImport", { import_lease_until: lease });
    await s.images.transition(id, "finishImport", {
      import_lease_until: null,
      stored_object: { key: stagingKey(id), version_id: "v1" },
    });
    s.objects.objects.set(stagingKey(id), new Uint8Array(3));
    s.objects.versionIds.set(stagingKey(id), "v1");
    s.objects.modified.set(stagingKey(id), new Date(s.clock.now().getTime() - 25 * HOUR).toISOString());

    expect(await s.sweeper.sweep()).toMatchObject({ deletedObjects: 0, deletedVersions: 0 });
    expect(s.objects.objects.has(stagingKey(id))).toBe(true);
  });

  it("deletes other versions of a kept upload's key older than the cutoff, by version, nothing else", async () => {
    const s = setup();
    const kept = (await s.service.create({ name: "kept" }, alice)).image.id;
    const queued = (await s.service.create({ name: "queued" }, alice)).image.id;
    const lease = new Date(s.clock.now().getTime() + 60_000).toISOString();
    await s.images.transition(kept, "startImport", { import_lease_until: lease });
    await s.images.transition(kept, "finishImport", {
      import_lease_until: null,
      stored_object: { key: stagingKey(kept), version_id: "v1" },
    });
    const record = await s.images.get(kept);
    const at = (hoursAgo: number) => new Date(s.clock.now().getTime() - hoursAgo * HOUR).toISOString();
    const listed: ListedVersion[] = [
      { key: stagingKey(kept), versionId: "v1", lastModified: at(48), deleteMarker: false },
      { key: stagingKey(kept), versionId: "v2", lastModified: at(25), deleteMarker: false },
      { key: stagingKey(kept), versionId: "m3", lastModified: at(25), deleteMarker: true },
      // Its storage event may still be on the way.
      { key: stagingKey(kept), versionId: "v4", lastModified: at(1), deleteMarker: false },
      // Another key of the same image, and a queued image's upload: the staged-object rules judge those.
      { key: `${stagingKey(kept)}-other`, versionId: "v5", lastModified: at(25), deleteMarker: false },
      { key: stagingKey(queued), versionId: "v6", lastModified: at(1), deleteMarker: false },
    ];
    s.objects.listVersions = async function* (prefix: string) {
      yield* listed.filter((v) => v.key.startsWith(prefix));
    };
    const deleted: string[] = [];
    s.objects.delete = async (key: string, versionId?: string) => {
      deleted.push(`${key}@${versionId}`);
    };

    const report = await s.sweeper.sweep();

    expect(report.deletedVersions).toBe(2);
    expect(deleted).toEqual([`${stagingKey(kept)}@v2`, `${stagingKey(kept)}@m3`]);
    expect(await s.images.get(kept)).toEqual(record);
  });

  it("counts only a different version at the kept key under staging/ as an overwrite", () => {
    const key = "staging/00000000-0000-4000-8000-000000000001/upload";
    expect(isOverwrite({ key, version_id: "v1" }, { key, versionId: "v2" })).toBe(true);
    expect(isOverwrite({ key, version_id: "v1" }, { key, versionId: "v1" })).toBe(false);
    expect(isOverwrite({ key, version_id: "v1" }, { key: `${key}x`, versionId: "v2" })).toBe(false);
    // Data kept unversioned, or at images/<id>: nothing under staging/ is the image's.
    expect(isOverwrite({ key }, { key, versionId: "null" })).toBe(false);
    expect(isOverwrite({ key: "images/x", version_id: "v1" }, { key: "images/x", versionId: "v2" })).toBe(
      false,
    );
  });

  it("kills an import whose lease expired beyond the grace, and cleans what it left", async () => {
    const s = setup();
    const id = (await s.service.create({ name: "stuck" }, alice)).image.id;
    const lease = new Date(s.clock.now().getTime() + 16 * 60_000).toISOString();
    await s.images.transition(id, "startImport", { import_lease_until: lease });
    s.objects.objects.set(stagingKey(id), new Uint8Array(3));
    s.objects.modified.set(stagingKey(id), s.clock.now().toISOString());
    s.objects.objects.set(imageKey(id), new Uint8Array(1));

    s.clock.advance(60 * 60_000);
    expect(await s.sweeper.sweep()).toMatchObject({ killedImports: 0 });
    expect((await s.images.get(id))?.status).toBe("importing");

    s.clock.advance(20 * 60_000);
    expect(await s.sweeper.sweep()).toMatchObject({ killedImports: 1 });
    expect(await s.images.get(id)).toMatchObject({
      status: "killed",
      failure: { reason: "IMPORT_STALLED" },
      import_lease_until: null,
    });
    expect(s.objects.objects.size).toBe(0);
  });

  it("kills an image held past the grace with nothing staged (a web-download that died before staging)", async () => {
    const s = setup();
    const id = (await s.service.create({ name: "fetching" }, alice)).image.id;
    const lease = new Date(s.clock.now().getTime() + 15 * 60_000).toISOString();
    await s.images.transition(id, "startImport", { import_lease_until: lease });

    s.clock.advance(60 * 60_000);
    expect(await s.sweeper.sweep()).toMatchObject({ killedImports: 0 });
    s.clock.advance(20 * 60_000);
    expect(await s.sweeper.sweep()).toMatchObject({ killedImports: 1, deletedObjects: 0 });
    expect(await s.images.get(id)).toMatchObject({ status: "killed", failure: { reason: "IMPORT_STALLED" } });
  });

  it("gives an image a web-download handed over the grace from the hand-over, then kills it", async () => {
    const s = setup();
    const id = (await s.service.create({ name: "handed" }, alice)).image.id;
    await s.images.transition(id, "startImport", { import_lease_until: s.clock.now().toISOString() });
    await s.images.transition(id, "handOverImport", {
      import_lease_until: HANDED_OVER,
      updated_at: s.clock.now().toISOString(),
    });
    s.objects.objects.set(stagingKey(id), new Uint8Array(3));
    s.objects.modified.set(stagingKey(id), s.clock.now().toISOString());

    // The importer's storage event normally takes it within seconds: the sweep leaves it alone meanwhile.
    expect(await s.sweeper.sweep()).toMatchObject({ killedImports: 0 });
    s.clock.advance(59 * 60_000);
    expect(await s.sweeper.sweep()).toMatchObject({ killedImports: 0 });
    expect((await s.images.get(id))?.status).toBe("importing");
    s.clock.advance(2 * 60_000);
    expect(await s.sweeper.sweep()).toMatchObject({ killedImports: 1 });
    const killed = await s.images.get(id);
    expect(killed?.failure?.message).not.toContain("1970");
    expect(s.objects.objects.has(stagingKey(id))).toBe(false);
  });

  /** Images in four situations, each with a multipart write a crashed importer left at its keys. */
  async function crashedWrites(s: ReturnType<typeof setup>) {
    const create = async (name: string) => (await s.service.create({ name }, alice)).image.id;
    const importing = await create("importing");
    await s.images.transition(importing, "startImport", {
      import_lease_until: new Date(s.clock.now().getTime() + 60_000).toISOString(),
    });
    const queued = await create("released");
    const killed = await create("killed");
    await s.images.transition(killed, "failImport", {});
    const gone = "00000000-0000-4000-8000-00000000dead";
    const writes = {
      importing: await s.storage.create(imageKey(importing)),
      queued: await s.storage.create(spoolKey(queued)),
      killed: await s.storage.create(imageKey(killed)),
      gone: await s.storage.create(imageKey(gone)),
    };
    return writes;
  }

  it("aborts multipart writes of stored images and spools whose import is over, not a running one's", async () => {
    const s = setup();
    const writes = await crashedWrites(s);
    const report = await s.sweeper.sweep();
    expect(report.abortedUploads).toBe(3);
    expect([...s.storage.pending.keys()]).toEqual([writes.importing]);
  });

  it("finds those writes by whole key where storage cannot list uploads by prefix (MinIO)", async () => {
    const s = setup();
    const writes = await crashedWrites(s);
    const listPending = s.storage.listPending.bind(s.storage);
    s.storage.listPending = async (prefix: string) =>
      (await listPending(prefix)).filter((u) => u.key === prefix);
    const report = await s.sweeper.sweep();
    // The upload of an image whose record is gone cannot be found by key; S3's prefix listing (and its
    // lifecycle rule) covers that one.
    expect(report.abortedUploads).toBe(2);
    expect([...s.storage.pending.keys()].sort()).toEqual([writes.gone, writes.importing].sort());
  });
});
