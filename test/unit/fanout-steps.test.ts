import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ImportRejectedError } from "../../functions/core/errors.ts";
import { createFanoutControl } from "../../functions/core/fanout/control.ts";
import { createFanoutHash, type HashStepOutput } from "../../functions/core/fanout/hash-step.ts";
import { ERROR_PREFIX, failureOf, stepError } from "../../functions/core/fanout/held.ts";
import type { FanoutJob } from "../../functions/core/fanout/job.ts";
import type { FanoutProgressStore, FanoutStorage, ListedPart } from "../../functions/core/fanout/ports.ts";
import { createFanoutWorker } from "../../functions/core/fanout/worker.ts";
import { imageKey } from "../../functions/core/image/image.ts";
import { fixedClock, imageRecord, MemoryImages, MemoryObjects, silentLog } from "./fakes.ts";

// The fan-out's steps as the state machine calls them, on in-memory records and storage (pure logic:
// the real storage, records and state machine are exercised by test/integration/fanout.test.ts).

const MiB = 1024 * 1024;
const ID = "00000000-0000-4000-8000-0000000000f0";
const EXEC = `${ID}-exec1`;
const UPLOAD = `staging/${ID}/upload`;

/** Multipart uploads in memory: parts by number, completed into `objects`. */
class MemoryFanoutStorage implements FanoutStorage {
  readonly uploads = new Map<string, { key: string; parts: Map<number, Uint8Array> }>();
  partWrites = 0;
  /** The ETag each ranged read required, by key. */
  readonly ifMatch: [string, string | undefined][] = [];
  private n = 0;
  constructor(private readonly objects: MemoryObjects) {}
  async create(key: string) {
    const id = `u${++this.n}`;
    this.uploads.set(id, { key, parts: new Map() });
    return id;
  }
  private upload(key: string, uploadId: string) {
    const u = this.uploads.get(uploadId);
    if (!u || u.key !== key) throw Object.assign(new Error("NoSuchUpload"), { name: "NoSuchUpload" });
    return u;
  }
  async uploadPart(key: string, uploadId: string, partNumber: number, body: Uint8Array) {
    this.partWrites++;
    this.upload(key, uploadId).parts.set(partNumber, body.slice());
  }
  async copyPart(
    key: string,
    uploadId: string,
    partNumber: number,
    from: { key: string; first: number; last: number },
  ) {
    this.partWrites++;
    const src = await this.objects.readRange(from.key, from.first, from.last - from.first + 1);
    this.upload(key, uploadId).parts.set(partNumber, src.slice());
  }
  async listParts(key: string, uploadId: string): Promise<ListedPart[] | undefined> {
    const u = this.uploads.get(uploadId);
    if (!u || u.key !== key) return undefined;
    return [...u.parts].map(([partNumber, b]) => ({
      partNumber,
      size: b.byteLength,
      etag: `e${partNumber}`,
    }));
  }
  async complete(key: string, uploadId: string, parts: readonly ListedPart[]) {
    const u = this.upload(key, uploadId);
    this.objects.objects.set(key, Buffer.concat(parts.map((p) => u.parts.get(p.partNumber) as Uint8Array)));
    this.uploads.delete(uploadId);
  }
  async abort(_key: string, uploadId: string) {
    this.uploads.delete(uploadId);
  }
  async *readRange(key: string, offset: number, length: number, options?: { ifMatch?: string | undefined }) {
    this.ifMatch.push([key, options?.ifMatch]);
    const all = await this.objects.readRange(key, offset, length);
    for (let i = 0; i < all.byteLength; i += 1_000_000) yield all.subarray(i, i + 1_000_000);
  }
}

/** The DynamoDB adapter's semantics: ADD once per `once`, only while the execution holds the image. */
class MemoryProgress implements FanoutProgressStore {
  private readonly counted = new Set<string>();
  constructor(private readonly images: MemoryImages) {}
  async record(
    id: string,
    execution: string,
    changes: { add?: Record<string, number>; set?: Record<string, number>; once?: number },
    leaseUntil: string,
  ) {
    const cur = this.images.items.get(id);
    if (cur?.status !== "importing" || cur.import_execution !== execution) return false;
    if (changes.once !== undefined) {
      const key = `${id}#${changes.once}`;
      if (this.counted.has(key)) return true;
      this.counted.add(key);
    }
    const p = { ...cur.import_progress } as unknown as Record<string, number>;
    for (const [k, v] of Object.entries(changes.add ?? {})) p[k] = (p[k] ?? 0) + v;
    Object.assign(p, changes.set ?? {});
    this.images.items.set(id, { ...cur, import_lease_until: leaseUntil, import_progress: p as never });
    return true;
  }
}

function job(over: Partial<FanoutJob> = {}): FanoutJob {
  return {
    upload_key: UPLOAD,
    upload_etag: null,
    upload_size: 0,
    mode: "copy",
    source_format: "raw",
    convert_from: null,
    stored_format: "raw",
    output_size: 0,
    virtual_size: 0,
    part_size: 5 * MiB,
    range_bytes: 10 * MiB,
    workers: 2,
    hash_link_bytes: 7 * MiB + 3,
    algos: ["md5", "sha512"],
    os_hash_algo: "sha512",
    upload_id: null,
    started_at: "2026-01-01T00:00:00.000Z",
    ...over,
  };
}

async function setup(bytes: Uint8Array, over: Partial<FanoutJob> = {}) {
  const images = new MemoryImages();
  const objects = new MemoryObjects();
  const storage = new MemoryFanoutStorage(objects);
  const progress = new MemoryProgress(images);
  const clock = fixedClock();
  objects.objects.set(UPLOAD, bytes);
  await images.create(
    imageRecord({
      id: ID,
      status: "importing",
      size: null,
      checksum: null,
      import_lease_until: "2026-01-01T00:01:00.000Z",
      import_execution: EXEC,
      import_fanout: job({
        upload_size: bytes.length,
        output_size: bytes.length,
        virtual_size: bytes.length,
        ...over,
      }),
      import_progress: {
        bytes_read: 0,
        total: bytes.length,
        updated_at: "2026-01-01T00:00:00.000Z",
        workers: 2,
        ranges_done: 0,
        ranges_total: 3,
        bytes_hashed: 0,
      },
    }),
  );
  const deps = { images, clock, log: silentLog };
  const settled: string[] = [];
  const control = createFanoutControl({
    ...deps,
    objects,
    storage,
    onSettled: ({ outcome, image }) => settled.push(`${outcome} ${image.id}`),
  });
  const worker = createFanoutWorker({ ...deps, storage, progress, maxVirtualSize: 2 ** 40 });
  const hash = createFanoutHash({ ...deps, storage, progress });
  return { images, objects, storage, control, worker, hash, settled };
}

const input = { imageId: ID, execution: EXEC };

describe("fan-out steps", () => {
  // 23 MiB + 5 bytes: 5 parts of 5 MiB (the last short), 3 ranges, 4 links of 7 MiB + 3.
  const bytes = randomBytes(23 * MiB + 5);

  it("plan, ranges (one retried), complete (twice), a chain of links, finish (twice): the image, active with one pass's digests", async () => {
    const s = await setup(bytes);
    const plan = await s.control.plan(input);
    expect(plan).toMatchObject({ virtualSize: bytes.length, partsTotal: 5, workers: 2 });
    expect(plan.ranges).toHaveLength(3);
    // Every step holds the image 150 s ahead: no re-drive or stall rule takes a running fan-out.
    expect((await s.images.get(ID))?.import_lease_until).toBe("2026-01-01T00:02:30.000Z");
    for (const range of plan.ranges) await s.worker.convert({ ...input, uploadId: plan.uploadId, range });
    // A retried range writes the same parts again and is counted once.
    const again = plan.ranges[1];
    if (!again) throw new Error("no second range");
    await s.worker.convert({ ...input, uploadId: plan.uploadId, range: again });
    expect((await s.images.get(ID))?.import_progress).toMatchObject({ ranges_done: 3 });
    await s.control.complete({ ...input, uploadId: plan.uploadId, partsTotal: plan.partsTotal });
    // Its answer lost, Complete runs again: the upload is gone, the object is whole.
    await s.control.complete({ ...input, uploadId: plan.uploadId, partsTotal: plan.partsTotal });
    let out: HashStepOutput = { done: false, offset: 0, state: null as never };
    let links = 0;
    while (!out.done) {
      out = await s.hash.hash({
        ...input,
        virtualSize: plan.virtualSize,
        offset: out.offset,
        state: out.state,
      });
      links++;
    }
    expect(links).toBe(4);
    const digests = out.digests;
    expect(digests).toEqual({
      md5: createHash("md5").update(bytes).digest("hex"),
      sha512: createHash("sha512").update(bytes).digest("hex"),
    });
    await s.control.finish({ ...input, digests });
    await s.control.finish({ ...input, digests });
    // Recorded (the `import result` line, metrics) once, by the finish that won.
    expect(s.settled).toEqual([`active ${ID}`]);
    const image = await s.images.get(ID);
    expect(image).toMatchObject({
      status: "active",
      size: bytes.length,
      disk_format: "raw",
      checksum: digests.md5,
      os_hash_value: digests.sha512,
      import_execution: null,
      import_fanout: null,
      import_lease_until: null,
      import_progress: { ranges_done: 3, ranges_total: 3, bytes_hashed: bytes.length },
    });
    expect(Buffer.from(s.objects.objects.get(imageKey(ID)) as Uint8Array).equals(bytes)).toBe(true);
    expect(s.objects.objects.has(UPLOAD)).toBe(false);
  });

  it("refuses to complete an upload with a part missing", async () => {
    const s = await setup(bytes);
    const plan = await s.control.plan(input);
    const [first] = plan.ranges;
    if (!first) throw new Error("no range");
    await s.worker.convert({ ...input, uploadId: plan.uploadId, range: first });
    await expect(
      s.control.complete({ ...input, uploadId: plan.uploadId, partsTotal: plan.partsTotal }),
    ).rejects.toThrow(/has 2 parts, expected 5/);
  });

  it("a finish whose declared sha256 does not match fails as DIGEST_MISMATCH", async () => {
    const s = await setup(bytes, { algos: ["md5", "sha512", "sha256"] });
    await s.images.update(ID, { upload_sha256: "0".repeat(64) }, ["importing"]);
    s.objects.objects.set(imageKey(ID), bytes);
    const err = await s.control
      .finish({ ...input, digests: { md5: "a", sha512: "b", sha256: "c".repeat(64) } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImportRejectedError);
    expect((stepError(err) as Error).name).toBe(`${ERROR_PREFIX}DIGEST_MISMATCH`);
  });

  it("cleanup aborts the upload, deletes the object and the upload, and kills the image with the step's reason", async () => {
    const s = await setup(bytes);
    const plan = await s.control.plan(input);
    s.objects.objects.set(imageKey(ID), new Uint8Array(10));
    await s.control.cleanup({
      ...input,
      error: {
        Error: "Hangar.UNSAFE_IMAGE",
        Cause: JSON.stringify({
          errorMessage: "qcow2 data cluster at guest 41943040 has an invalid host offset",
        }),
      },
    });
    expect(s.settled).toEqual([`killed ${ID}`]);
    expect(s.storage.uploads.has(plan.uploadId)).toBe(false);
    expect(s.objects.objects.has(imageKey(ID))).toBe(false);
    expect(s.objects.objects.has(UPLOAD)).toBe(false);
    expect(await s.images.get(ID)).toMatchObject({
      status: "killed",
      failure: { reason: "UNSAFE_IMAGE", message: expect.stringContaining("invalid host offset") },
      import_execution: null,
      import_lease_until: null,
    });
  });

  it("an execution that no longer holds the image touches nothing: its steps fail, its cleanup leaves the record and objects", async () => {
    const s = await setup(bytes);
    const stale = { imageId: ID, execution: `${ID}-older` };
    await expect(s.control.plan(stale)).rejects.toThrow(/not imported by execution/);
    s.objects.objects.set(imageKey(ID), new Uint8Array(10));
    await s.control.cleanup({ ...stale, error: { Error: "States.Timeout" } });
    expect(s.objects.objects.has(imageKey(ID))).toBe(true);
    expect(s.objects.objects.has(UPLOAD)).toBe(true);
    expect((await s.images.get(ID))?.status).toBe("importing");
  });
});

describe("the upload's own chain (a converted upload that declares upload_sha256)", () => {
  // The upload (what the client sent and declared) and the stored raw image differ in bytes and size.
  const upload = randomBytes(17 * MiB + 11);
  const stored = randomBytes(23 * MiB + 5);
  const sha256 = createHash("sha256").update(upload).digest("hex");
  const converted: Partial<FanoutJob> = {
    mode: "convert",
    source_format: "qcow2",
    convert_from: "qcow2",
    upload_etag: '"e1"',
    upload_algos: ["sha256"],
    output_size: stored.length,
    virtual_size: stored.length,
  };

  /** Runs the upload chain link by link (running `retry` twice), as the state machine would. */
  async function uploadChain(s: Awaited<ReturnType<typeof setup>>, retry = -1) {
    let out: HashStepOutput = { done: false, offset: 0, state: null as never };
    const offsets: number[] = [];
    for (let i = 0; !out.done; i++) {
      const linkInput = {
        ...input,
        chain: "upload" as const,
        uploadSize: upload.length,
        offset: out.offset,
        state: out.state,
      };
      // The state went through JSON, as Step Functions carries it.
      const next: HashStepOutput = JSON.parse(JSON.stringify(await s.hash.hash(linkInput)));
      if (i === retry) expect(JSON.parse(JSON.stringify(await s.hash.hash(linkInput)))).toEqual(next);
      offsets.push(out.offset);
      out = next;
    }
    return { digests: out.digests, offsets };
  }

  it("restores its state link after link to the sha256 of one pass over the upload, read under its ETag; finish activates", async () => {
    const s = await setup(upload, converted);
    await s.images.update(ID, { upload_sha256: sha256 }, ["importing"]);
    s.objects.objects.set(imageKey(ID), stored);
    const { digests, offsets } = await uploadChain(s, 1);
    // Three links of 7 MiB + 3 over 17 MiB + 11, the second run twice with the same result.
    expect(offsets).toEqual([0, 7 * MiB + 3, 14 * MiB + 6]);
    expect(digests).toEqual({ sha256 });
    expect(new Set(s.storage.ifMatch.map(([key, etag]) => `${key} ${etag}`))).toEqual(
      new Set([`${UPLOAD} "e1"`]),
    );
    expect((await s.images.get(ID))?.import_progress).toMatchObject({ upload_bytes_hashed: upload.length });
    const storedDigests = {
      md5: createHash("md5").update(stored).digest("hex"),
      sha512: createHash("sha512").update(stored).digest("hex"),
    };
    await s.control.finish({ ...input, digests: storedDigests, uploadDigests: digests });
    expect(await s.images.get(ID)).toMatchObject({
      status: "active",
      size: stored.length,
      checksum: storedDigests.md5,
      os_hash_value: storedDigests.sha512,
      converted: true,
      import_progress: { bytes_hashed: stored.length, upload_bytes_hashed: upload.length },
    });
  });

  it("refuses a declared sha256 that is not the upload's: at the chain's last link, and at finish", async () => {
    const s = await setup(upload, converted);
    const wrong = createHash("sha256").update("not the upload").digest("hex");
    await s.images.update(ID, { upload_sha256: wrong }, ["importing"]);
    s.objects.objects.set(imageKey(ID), stored);
    const err = await uploadChain(s).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImportRejectedError);
    expect((err as ImportRejectedError).message).toBe(
      `The upload's sha256 is ${sha256} but the image declared upload_sha256 ${wrong}.`,
    );
    expect((stepError(err) as Error).name).toBe(`${ERROR_PREFIX}DIGEST_MISMATCH`);
    // Finish is the gate whatever reached it: the wrong digest, or none from the upload's chain.
    for (const uploadDigests of [{ sha256 }, {}, undefined]) {
      const declared = uploadDigests?.sha256 === sha256 ? wrong : sha256;
      await s.images.update(ID, { upload_sha256: declared }, ["importing"]);
      const refused = await s.control
        .finish({ ...input, digests: { md5: "a", sha512: "b", sha256 }, uploadDigests })
        .catch((e: unknown) => e);
      expect(refused).toMatchObject({ reason: "DIGEST_MISMATCH" });
      expect((await s.images.get(ID))?.status).toBe("importing");
    }
  });
});

describe("the reason a user reads", () => {
  it("keeps a permanent import failure's reason and message (Hangar.<REASON>, AWS's JSON Cause)", () => {
    const err = stepError(new ImportRejectedError("UNSAFE_IMAGE", "qcow2 backing file: refused"));
    expect((err as Error).name).toBe("Hangar.UNSAFE_IMAGE");
    expect(
      failureOf({
        Error: "Hangar.UNSAFE_IMAGE",
        Cause: JSON.stringify({
          errorType: "Hangar.UNSAFE_IMAGE",
          errorMessage: "qcow2 backing file: refused",
        }),
      }),
    ).toEqual({ reason: "UNSAFE_IMAGE", message: "qcow2 backing file: refused" });
  });

  it("says FANOUT_FAILED, without internals, for anything else (a timeout, storage, a bug)", () => {
    for (const error of [
      { Error: "States.Timeout", Cause: "" },
      { Error: "Error", Cause: JSON.stringify({ errorMessage: "connect ECONNREFUSED 10.0.0.1:443" }) },
      { Error: "Hangar.NOT_A_REASON", Cause: "x" },
      undefined,
    ]) {
      const f = failureOf(error);
      expect(f.reason).toBe("FANOUT_FAILED");
      expect(f.message).not.toContain("ECONNREFUSED");
      expect(f.message).toMatch(/Upload the image again/);
    }
  });
});
