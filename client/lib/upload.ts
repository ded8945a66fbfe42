import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { type FileHandle, open, stat } from "node:fs/promises";
import { resolve } from "node:path";
import { Transform } from "node:stream";
import { HangarApiError, type HangarClient, type Image, type MultipartPlan, type SingleLink } from "./api.ts";
import { diskFormatFor, inspectFile, policyLine } from "./inspect.ts";
import { PartLinks } from "./part-links.ts";
import { clearState, type FileIdentity, loadState, saveState } from "./state.ts";
import { type Agents, createAgents, StorageError, sendPresigned } from "./transfer.ts";
import { humanBytes } from "./units.ts";
import { waitForImage } from "./wait.ts";

/** Files up to this size are hashed in a first pass so the sha256 is declared at create (≈50 ms per 64 MiB). */
export const DEFAULT_PREHASH_LIMIT = 64 * 1024 * 1024;
/** Attempts per part before the upload gives up (network faults, 5xx, expired links). */
const PART_ATTEMPTS = 4;
const READ_CHUNK = 1024 * 1024;
/** Statuses in which an image of an earlier run can still be resumed (or waited for). */
const RESUMABLE = new Set(["queued", "importing", "active"]);

export interface UploadOptions {
  path: string;
  name: string;
  diskFormat?: string | undefined;
  containerFormat?: string | undefined;
  visibility?: string | undefined;
  properties?: Record<string, string> | undefined;
  /** Parts in flight at once; memory held is about (parallel + 1) × part size. */
  parallel: number;
  stateDir: string;
  prehashLimit?: number | undefined;
  /** Inspect the file before creating the image (default true): fills and checks the disk format. */
  inspect?: boolean | undefined;
  /** Wait for `active`/`killed` after the upload. */
  wait: boolean;
  waitTimeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  events?: UploadEvents | undefined;
}

/** What the CLI shows while uploading. */
export interface UploadEvents {
  /** The image is known; `bytes` will be sent in this run, in `partsToSend` of the plan's `partCount` parts. */
  begin?(info: {
    imageId: string;
    resumed: boolean;
    method: string;
    bytes: number;
    partCount?: number;
    partsToSend?: number;
  }): void;
  bytes?(n: number): void;
  part?(info: { partNumber: number; partCount: number; uploaded: boolean }): void;
  note?(line: string): void;
}

export interface UploadResult {
  image_id: string;
  status: string;
  resumed: boolean;
  method: "PUT" | "multipart" | "none";
  part_size: number | null;
  part_count: number | null;
  /** Parts sent in this run; parts already in storage are `skipped_parts`. */
  uploaded_parts: number[];
  skipped_parts: number[];
  bytes_uploaded: number;
  /** sha256 of the file as read in this run. */
  sha256: string | null;
  /** Whether Hangar verifies that sha256 on import (declared at create or at completion). */
  sha256_declared: boolean;
  /** Format of the file as inspected before the upload (null when resumed or not inspected). */
  file_format: string | null;
  /** Of the stored image, once imported: format, size, checksums (of the stored bytes, not the file's). */
  disk_format: string | null;
  converted: boolean | null;
  size: number | null;
  virtual_size: number | null;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  failure: { reason: string; message: string } | null;
}

export class UploadInterruptedError extends Error {
  override name = "UploadInterruptedError";
  constructor(readonly imageId: string) {
    super(`upload of image ${imageId} interrupted; run the same command again to resume it`);
  }
}

/** The file's bytes differ from those the image was created for (same path, size and mtime). */
export class FileChangedError extends Error {
  override name = "FileChangedError";
  constructor(readonly imageId: string) {
    super(
      `the file changed since image ${imageId} was created for it (its sha256 differs from the one declared then); ` +
        `run the command again to upload it as a new image, and delete ${imageId} (still queued)`,
    );
  }
}

/** The file cannot be uploaded as it is (missing, unreadable, empty, not a file). */
export class UploadFileError extends Error {
  override name = "UploadFileError";
}

interface LocalFile {
  path: string;
  size: number;
  identity: FileIdentity;
}

const FILE_ERRORS: Record<string, string> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  ENOTDIR: "a folder on its path is a file",
  ELOOP: "too many symbolic links",
};

async function localFile(client: HangarClient, opts: UploadOptions): Promise<LocalFile> {
  const path = resolve(opts.path);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch (err) {
    const why = FILE_ERRORS[(err as NodeJS.ErrnoException).code ?? ""];
    if (why) throw new UploadFileError(`cannot upload ${opts.path}: ${why}`, { cause: err });
    throw err;
  }
  if (!info.isFile()) throw new UploadFileError(`${opts.path} is not a regular file`);
  if (info.size === 0) throw new UploadFileError(`${opts.path} is empty: there is no image to upload`);
  const identity = { path, size: info.size, mtimeMs: info.mtimeMs, name: opts.name, apiUrl: client.apiUrl };
  return { path, size: info.size, identity };
}

async function sha256Of(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: READ_CHUNK }))
    hash.update(chunk as Buffer);
  return hash.digest("hex");
}

async function readFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) throw new Error(`the file ended early at byte ${position + done}; did it change?`);
    done += bytesRead;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The image an earlier run of the same upload created, if it can still be resumed; forgets it otherwise. */
async function earlierImage(
  client: HangarClient,
  opts: UploadOptions,
  file: LocalFile,
): Promise<Image | undefined> {
  const saved = await loadState(opts.stateDir, file.identity);
  if (!saved) return undefined;
  let image: Image | undefined;
  try {
    image = await client.getImage(saved.imageId);
  } catch (err) {
    if (!(err instanceof HangarApiError && err.status === 404)) throw err;
  }
  if (image && RESUMABLE.has(image.status)) {
    opts.events?.note?.(`resuming image ${image.id} (${image.status})`);
    return image;
  }
  opts.events?.note?.(`the image of an earlier run is ${image?.status ?? "gone"}; starting a new one`);
  await clearState(opts.stateDir, file.identity);
  return undefined;
}

/** The operator's policy; an API that does not publish it (404) is not a reason to stop. */
async function importPolicy(client: HangarClient) {
  try {
    return await client.importPolicy();
  } catch (err) {
    if (err instanceof HangarApiError && err.status === 404) return undefined;
    throw err;
  }
}

interface Created {
  image: Image;
  /** sha256 declared at create, when the file was hashed first. */
  declared: string | undefined;
  fileFormat: string | null;
}

/**
 * Creates the image for a file: inspects it first with the importer's inspector (unless told not to),
 * which fills or checks the disk format and refuses what the importer would kill, and says what the
 * operator's policy will make of it. Resume state is saved before any byte is sent.
 */
async function createFor(client: HangarClient, opts: UploadOptions, file: LocalFile): Promise<Created> {
  const hashFirst = file.size <= (opts.prehashLimit ?? DEFAULT_PREHASH_LIMIT);
  let declared: string | undefined;
  let diskFormat = opts.diskFormat;
  let fileFormat: string | null = null;
  if (opts.inspect !== false) {
    const policy = await importPolicy(client);
    opts.events?.note?.(`inspecting ${opts.path} (${humanBytes(file.size)})`);
    const found = await inspectFile(file.path, file.size, policy, { sha256: hashFirst, signal: opts.signal });
    diskFormat = diskFormatFor(opts.diskFormat, found);
    fileFormat = found.format;
    declared = found.sha256;
    opts.events?.note?.(policyLine(found, policy));
  } else if (hashFirst) {
    declared = await sha256Of(file.path);
  }
  const image = await client.createImage({
    name: opts.name,
    ...(diskFormat ? { disk_format: diskFormat } : {}),
    ...(opts.containerFormat ? { container_format: opts.containerFormat } : {}),
    ...(opts.visibility ? { visibility: opts.visibility } : {}),
    ...opts.properties,
    upload_size: file.size,
    ...(declared ? { upload_sha256: declared } : {}),
  });
  await saveState(opts.stateDir, file.identity, image.id);
  return { image, declared, fileFormat };
}

function newResult(image: Image, resumed: boolean, created: Created | undefined): UploadResult {
  return {
    image_id: image.id,
    status: image.status,
    resumed,
    method: "none",
    part_size: null,
    part_count: null,
    uploaded_parts: [],
    skipped_parts: [],
    bytes_uploaded: 0,
    sha256: created?.declared ?? null,
    sha256_declared: created?.declared !== undefined || (image.upload_sha256 ?? null) !== null,
    file_format: created?.fileFormat ?? null,
    disk_format: null,
    converted: null,
    size: null,
    virtual_size: null,
    checksum: null,
    os_hash_algo: null,
    os_hash_value: null,
    failure: null,
  };
}

/** What one run of an upload shares: the client, the file, the options and the result being filled. */
interface Run {
  client: HangarClient;
  opts: UploadOptions;
  file: LocalFile;
  imageId: string;
  agents: Agents;
  result: UploadResult;
}

/**
 * Uploads a file as a new image, or resumes the image a previous run of the same upload created:
 * a single presigned PUT, or a multipart plan with parts in parallel. A new image's file is inspected
 * first (read whole and hashed when small; otherwise only the ranges the verdict needs), then read once
 * to send it, hashed on the way; resume state is saved before any byte is sent, and the import is waited
 * for. Memory: (parallel + 1) × part size for multipart (the part buffers are reused), one 1 MiB read
 * chunk for a single PUT, plus the inspector's captures (at most 8 MiB).
 */
export async function uploadFile(client: HangarClient, opts: UploadOptions): Promise<UploadResult> {
  const file = await localFile(client, opts);
  const earlier = await earlierImage(client, opts, file);
  const created = earlier ? undefined : await createFor(client, opts, file);
  const image = earlier ?? (created as Created).image;
  const result = newResult(image, earlier !== undefined, created);
  if (image.status === "queued") {
    const agents = createAgents(Math.max(1, opts.parallel));
    try {
      await sendFile({ client, opts, file, imageId: image.id, agents, result }, image.upload);
    } finally {
      agents.http.destroy();
      agents.https.destroy();
    }
  }
  if (!opts.wait) {
    // The bytes are in storage: there is nothing left to resume, and the image may be deleted before
    // anyone runs this again.
    await clearState(opts.stateDir, file.identity);
    return result;
  }
  opts.events?.note?.(`waiting for image ${image.id} to be imported`);
  const final = await waitForImage(client, image.id, { timeoutMs: opts.waitTimeoutMs, signal: opts.signal });
  if (final.status === "active" || final.status === "killed") await clearState(opts.stateDir, file.identity);
  return {
    ...result,
    status: final.status,
    disk_format: final.disk_format ?? null,
    converted: typeof final.converted === "boolean" ? final.converted : null,
    size: final.size ?? null,
    virtual_size: typeof final.virtual_size === "number" ? final.virtual_size : null,
    checksum: final.checksum ?? null,
    os_hash_algo: final.os_hash_algo ?? null,
    os_hash_value: final.os_hash_value ?? null,
    failure: final.failure ?? null,
  };
}

async function sendFile(run: Run, link: Image["upload"]): Promise<void> {
  if (!link) throw new Error(`image ${run.imageId} is queued but offers this caller no upload link`);
  if (link.method !== "multipart") {
    await sendSingle(run, link);
    return;
  }
  try {
    await sendParts(run, link);
  } catch (err) {
    if (!(err instanceof HangarApiError && err.reason === "DIGEST_CONFLICT")) throw err;
    // The file changed in place since this image was created: resuming can never succeed.
    await clearState(run.opts.stateDir, run.file.identity);
    throw new FileChangedError(run.imageId);
  }
}

/** One presigned PUT of the whole file, hashed on the way. */
async function sendSingle(run: Run, link: SingleLink): Promise<void> {
  const { opts, file, result } = run;
  const ev = opts.events ?? {};
  result.method = "PUT";
  ev.begin?.({ imageId: run.imageId, resumed: result.resumed, method: "PUT", bytes: file.size });
  const hash = createHash("sha256");
  const tap = new Transform({
    highWaterMark: READ_CHUNK,
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  const source = createReadStream(file.path, { highWaterMark: READ_CHUNK }).pipe(tap);
  try {
    await sendPresigned(link, source, {
      agents: run.agents,
      signal: opts.signal,
      onBytes: (n) => ev.bytes?.(n),
    });
  } catch (err) {
    if (opts.signal?.aborted) throw new UploadInterruptedError(run.imageId);
    throw err;
  }
  result.bytes_uploaded = file.size;
  result.sha256 = hash.digest("hex");
}

/** Sends one part, signing it again and retrying on transient faults and expired links. */
async function sendPart(run: Run, links: PartLinks, n: number, buf: Buffer): Promise<void> {
  const { opts } = run;
  const ev = opts.events ?? {};
  for (let attempt = 1; ; attempt++) {
    let sent = 0;
    try {
      const link = await links.get(n, attempt > 1);
      const onBytes = (k: number) => {
        sent += k;
        ev.bytes?.(k);
      };
      await sendPresigned(link, buf, { agents: run.agents, signal: opts.signal, onBytes });
      return;
    } catch (err) {
      // Progress counted for a failed attempt is taken back so the bar stays honest.
      if (sent > 0) ev.bytes?.(-sent);
      const retry = err instanceof StorageError && (err.transient || err.expired);
      if (opts.signal?.aborted || !retry || attempt >= PART_ATTEMPTS) throw err;
      ev.note?.(`part ${n}: ${(err as Error).message}; retrying`);
      await sleep(250 * 2 ** attempt);
    }
  }
}

/** Part sizes of a plan for this file; a plan that does not fit the file is refused. */
function partLengths(plan: MultipartPlan, size: number): (n: number) => number {
  const { part_size: partSize, part_count: partCount } = plan;
  const lengthOf = (n: number) => (n < partCount ? partSize : size - partSize * (partCount - 1));
  if (lengthOf(partCount) <= 0 || lengthOf(partCount) > partSize) {
    throw new Error(
      `the image's plan (${partCount} parts of ${partSize}) does not fit this file of ${size} bytes`,
    );
  }
  return lengthOf;
}

/**
 * The multipart path: skip parts storage holds with the right size, send the others `parallel` at a time,
 * and complete with the sha256 of the whole file, which this single in-order read of it gives.
 */
async function sendParts(run: Run, plan: MultipartPlan): Promise<void> {
  const { client, opts, result } = run;
  const ev = opts.events ?? {};
  const lengthOf = partLengths(plan, run.file.size);
  const partCount = plan.part_count;
  Object.assign(result, { method: "multipart", part_size: plan.part_size, part_count: partCount });

  const stored = new Map((await client.listParts(plan)).parts.map((p) => [p.part_number, p.size]));
  const toSend: number[] = [];
  for (let n = 1; n <= partCount; n++) if (stored.get(n) !== lengthOf(n)) toSend.push(n);
  const sending = new Set(toSend);
  const bytes = toSend.reduce((s, n) => s + lengthOf(n), 0);
  const imageId = run.imageId;
  ev.begin?.({
    imageId,
    resumed: result.resumed,
    method: "multipart",
    bytes,
    partCount,
    partsToSend: toSend.length,
  });
  if (stored.size > 0) ev.note?.(`${partCount - toSend.length} of ${partCount} parts already in storage`);

  const hash = createHash("sha256");
  const links = new PartLinks(client, plan, toSend);
  const pool = new TaskPool(Math.max(1, opts.parallel));
  // Part buffers are reused: memory the process touched before costs no page faults to fill again.
  const free: Buffer[] = [];
  const fh = await open(run.file.path, "r");
  try {
    for (let n = 1; n <= partCount && !pool.failed && !opts.signal?.aborted; n++) {
      // Bounded memory: read the next part only when a slot is free.
      await pool.slot();
      if (pool.failed) break;
      const whole = free.pop() ?? Buffer.allocUnsafe(plan.part_size);
      const buf = whole.subarray(0, lengthOf(n));
      await readFully(fh, buf, (n - 1) * plan.part_size);
      // Every part is hashed, sent or not, in order: the whole file's sha256 comes from this one read.
      hash.update(buf);
      if (!sending.has(n)) {
        free.push(whole);
        result.skipped_parts.push(n);
        ev.part?.({ partNumber: n, partCount, uploaded: false });
        continue;
      }
      pool.run(async () => {
        await sendPart(run, links, n, buf);
        // Only once storage has answered is the buffer no longer read from; a failed part's is not reused.
        free.push(whole);
        result.uploaded_parts.push(n);
        result.bytes_uploaded += buf.length;
        ev.part?.({ partNumber: n, partCount, uploaded: true });
      });
    }
    // On failure, wait for the parts still in flight so none is left half-sent; storage keeps the finished ones.
    await pool.settled();
  } finally {
    await fh.close();
  }
  result.uploaded_parts.sort((a, b) => a - b);
  if (opts.signal?.aborted) throw new UploadInterruptedError(imageId);
  if (pool.failed) throw pool.failure;

  result.sha256 = hash.digest("hex");
  result.sha256_declared = true;
  await client.completeUpload(plan, result.sha256);
}

/** At most `size` tasks at once; the first failure is kept and stops new tasks from being admitted. */
class TaskPool {
  private readonly inflight = new Set<Promise<void>>();
  failed = false;
  failure: unknown;

  constructor(private readonly size: number) {}

  async slot(): Promise<void> {
    while (this.inflight.size >= this.size) await Promise.race(this.inflight);
  }

  run(task: () => Promise<void>): void {
    const tracked: Promise<void> = task()
      .catch((err: unknown) => {
        if (!this.failed) this.failure = err;
        this.failed = true;
      })
      .finally(() => this.inflight.delete(tracked));
    this.inflight.add(tracked);
  }

  async settled(): Promise<void> {
    await Promise.all(this.inflight);
  }
}
