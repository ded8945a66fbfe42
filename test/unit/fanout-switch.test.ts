import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FanoutStarter, FanoutStorage } from "../../functions/core/fanout/ports.ts";
import { createFanoutSwitch } from "../../functions/core/fanout/start.ts";
import { DEFAULT_IMPORT_POLICY } from "../../functions/core/policy.ts";
import { fixedClock, imageRecord, MemoryImages, MemoryObjects, silentLog } from "./fakes.ts";

// The importer's switch to the fan-out on in-memory records and storage (pure logic; the real path is
// test/integration/fanout.test.ts): which uploads fan out, the checks they pass first, the job, the start.

const MiB = 1024 * 1024;
const ID = "00000000-0000-4000-8000-0000000000f1";
const KEY = `staging/${ID}/upload`;
const qemuImg = (...args: string[]) => execFileSync("qemu-img", args, { stdio: ["ignore", "pipe", "pipe"] });

let dir: string;
let raw: Buffer;
let qcow2: Buffer;
let backed: Buffer;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "hangar-fanout-switch-"));
  raw = Buffer.alloc(8 * MiB);
  randomBytes(MiB).copy(raw, 3 * MiB);
  writeFileSync(join(dir, "src.raw"), raw);
  qemuImg("convert", "-f", "raw", "-O", "qcow2", join(dir, "src.raw"), join(dir, "img.qcow2"));
  qcow2 = readFileSync(join(dir, "img.qcow2"));
  qemuImg(
    "create",
    "-f",
    "qcow2",
    "-b",
    join(dir, "src.raw"),
    "-F",
    "raw",
    join(dir, "b.qcow2"),
    String(8 * MiB),
  );
  backed = readFileSync(join(dir, "b.qcow2"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function setup(
  bytes: Uint8Array,
  over: { threshold?: number; sha256?: string; failStart?: boolean; maxVirtualSize?: number } = {},
) {
  const images = new MemoryImages();
  const objects = new MemoryObjects();
  objects.objects.set(KEY, bytes);
  const storage = {
    async *readRange(key: string, offset: number, length: number) {
      yield await objects.readRange(key, offset, length);
    },
  } as unknown as FanoutStorage;
  const started: { name: string; imageId: string }[] = [];
  const starter: FanoutStarter = {
    async start(name, input) {
      if (over.failStart) throw new Error("Step Functions is unreachable");
      started.push({ name, ...input });
    },
  };
  await images.create(
    imageRecord({
      id: ID,
      status: "importing",
      disk_format: null,
      size: null,
      upload_sha256: over.sha256 ?? null,
      import_lease_until: "2026-01-01T00:01:00.000Z",
    }),
  );
  const fanout = createFanoutSwitch({
    images,
    objects,
    storage,
    starter,
    clock: fixedClock(),
    log: silentLog,
    policy: { ...DEFAULT_IMPORT_POLICY, maxVirtualSize: over.maxVirtualSize ?? 2 ** 40 },
    osHashAlgo: "sha512",
    settings: {
      threshold: over.threshold ?? MiB,
      rangeBytes: 10 * MiB,
      partSize: 5 * MiB,
      workers: 4,
      hashLinkBytes: 7 * MiB,
    },
  });
  const image = (await images.get(ID)) as NonNullable<Awaited<ReturnType<typeof images.get>>>;
  const staged = { key: KEY, size: bytes.length, etag: (await objects.head(KEY))?.etag };
  const signal = new AbortController().signal;
  return { images, fanout, image, staged, signal, started };
}

describe("the importer's switch to the fan-out", () => {
  it("fans out a qcow2 above the threshold: converted to raw by ranges, the job recorded, the execution started", async () => {
    const s = await setup(qcow2);
    const job = await s.fanout.consider(s.image, s.staged, s.signal);
    expect(job).toMatchObject({
      mode: "convert",
      source_format: "qcow2",
      convert_from: "qcow2",
      stored_format: "raw",
      output_size: 8 * MiB,
      virtual_size: 8 * MiB,
      algos: ["md5", "sha512"],
      upload_algos: [],
      upload_id: null,
    });
    if (!job) throw new Error("not fanned out");
    await s.fanout.launch(s.image, job, "2026-01-01T00:01:00.000Z");
    const record = await s.images.get(ID);
    expect(s.started).toEqual([{ name: record?.import_execution, imageId: ID }]);
    expect(record).toMatchObject({
      status: "importing",
      source_format: "qcow2",
      import_fanout: job,
      import_lease_until: "2026-01-01T00:01:00.000Z",
      import_progress: { workers: 1, ranges_done: 0, ranges_total: 1, bytes_hashed: 0 },
    });
  });

  it("stores an accepted raw upload as it is (parts copied), hashing sha256 too when one was declared", async () => {
    const s = await setup(raw, { sha256: "a".repeat(64) });
    expect(await s.fanout.consider(s.image, s.staged, s.signal)).toMatchObject({
      mode: "copy",
      convert_from: null,
      stored_format: "raw",
      output_size: raw.length,
      algos: ["md5", "sha512", "sha256"],
      // The stored bytes are the upload's: no chain of the upload's own.
      upload_algos: [],
    });
  });

  it("fans out a conversion with a declared sha256, with a sha256 chain over the upload beside the stored one", async () => {
    const s = await setup(qcow2, { sha256: "b".repeat(64) });
    const job = await s.fanout.consider(s.image, s.staged, s.signal);
    expect(job).toMatchObject({
      mode: "convert",
      convert_from: "qcow2",
      output_size: 8 * MiB,
      upload_size: qcow2.length,
      // The stored chain reads the raw output, whose sha256 is not the upload's.
      algos: ["md5", "sha512"],
      upload_algos: ["sha256"],
    });
    if (!job) throw new Error("not fanned out");
    await s.fanout.launch(s.image, job, "2026-01-01T00:01:00.000Z");
    expect((await s.images.get(ID))?.import_progress).toMatchObject({
      bytes_hashed: 0,
      upload_bytes_hashed: 0,
    });
  });

  it("leaves to one invocation: an image at or under the threshold, a gzip-wrapped upload", async () => {
    const under = await setup(qcow2, { threshold: 8 * MiB });
    expect(await under.fanout.consider(under.image, under.staged, under.signal)).toBeUndefined();
    const gz = await setup(gzipSync(raw));
    expect(await gz.fanout.consider(gz.image, gz.staged, gz.signal)).toBeUndefined();
  });

  it("refuses, before anything is started, what one invocation refuses: a virtual size above the limit", async () => {
    const s = await setup(qcow2, { maxVirtualSize: 4 * MiB });
    await expect(s.fanout.consider(s.image, s.staged, s.signal)).rejects.toMatchObject({
      reason: "UNSAFE_IMAGE",
      message: expect.stringContaining("virtual size"),
    });
    expect(s.started).toEqual([]);
  });

  it("leaves an image whose map does not open (a qcow2 with a backing file) to one invocation, which refuses it", async () => {
    const s = await setup(backed);
    expect(await s.fanout.consider(s.image, s.staged, s.signal)).toBeUndefined();
  });

  it("takes the job back when the execution cannot be started, and says why", async () => {
    const s = await setup(qcow2, { failStart: true });
    const job = await s.fanout.consider(s.image, s.staged, s.signal);
    if (!job) throw new Error("not fanned out");
    await expect(s.fanout.launch(s.image, job, "2026-01-01T00:01:00.000Z")).rejects.toThrow(/unreachable/);
    expect(await s.images.get(ID)).toMatchObject({ import_execution: null, import_fanout: null });
  });
});
