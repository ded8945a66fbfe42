import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { type FileHandle, open, stat } from "node:fs/promises";
import { resolve } from "node:path";
import { Transform } from "node:stream";
import { HangarApiError, type HangarClient, type Image, type MultipartPlan, type SignedPart } from "./api.ts";
import { clearState, type FileIdentity, loadState, saveState } from "./state.ts";
import { type Agents, createAgents, StorageError, sendPresigned } from "./transfer.ts";
import { waitForImage } from "./wait.ts";

/** Files up to this size are hashed in a first pass so the sha256 is declared at create (≈50 ms per 64 MiB). */
export const DEFAULT_PREHASH_LIMIT = 64 * 1024 * 1024;
/** Part links signed per request: enough to keep the pipeline fed, few enough to stay fresh. */
const SIGN_BATCH = 32;
/** Attempts per part before the upload gives up (network faults, 5xx, expired links). */
const PART_ATTEMPTS = 4;
const READ_CHUNK = 1024 * 1024;

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
  /** Wait for `active`/`killed` after the upload. */
  wait: boolean;
  waitTimeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  events?: UploadEvents | undefined;
}

/** What the CLI shows while uploading. */
export interface UploadEvents {
  /** The image is known; `bytes` will be sent in this run. */
  begin?(info: {
    imageId: string;
    resumed: boolean;
    method: string;
    bytes: number;
    partCount?: number;
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
  size: number | null;
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

/**
 * Uploads a file as a new image, or resumes the image a previous run of the same upload created:
 * a single presigned PUT, or a multipart plan with parts in parallel. Reads the file once (plus a first
 * hashing pass for small single-PUT files), saves resume state before sending any byte, and waits for the
 * import. Memory: (parallel + 1) × part size for multipart, one 1 MiB read chunk for a single PUT.
 */
export async function uploadFile(client: HangarClient, opts: UploadOptions): Promise<UploadResult> {
  const path = resolve(opts.path);
  const info = await stat(path);
  if (!info.isFile()) throw new Error(`${opts.path} is not a regular file`);
  if (info.size === 0) throw new Error(`${opts.path} is empty: there is no image to upload`);
  const identity: FileIdentity = {
    path,
    size: info.size,
    mtimeMs: info.mtimeMs,
    name: opts.name,
    apiUrl: client.apiUrl,
  };
  const ev = opts.events ?? {};

  let image: Image | undefined;
  let resumed = false;
  const saved = await loadState(opts.stateDir, identity);
  if (saved) {
    try {
      image = await client.getImage(saved.imageId);
    } catch (err) {
      if (!(err instanceof HangarApiError && err.status === 404)) throw err;
    }
    if (image && ["queued", "importing", "active"].includes(image.status)) {
      resumed = true;
      ev.note?.(`resuming image ${image.id} (${image.status})`);
    } else {
      ev.note?.(`the image of an earlier run is ${image?.status ?? "gone"}; starting a new one`);
      image = undefined;
      await clearState(opts.stateDir, identity);
    }
  }

  let declared: string | undefined;
  if (!image) {
    if (info.size <= (opts.prehashLimit ?? DEFAULT_PREHASH_LIMIT)) declared = await sha256Of(path);
    image = await client.createImage({
      name: opts.name,
      ...(opts.diskFormat ? { disk_format: opts.diskFormat } : {}),
      ...(opts.containerFormat ? { container_format: opts.containerFormat } : {}),
      ...(opts.visibility ? { visibility: opts.visibility } : {}),
      ...opts.properties,
      upload_size: info.size,
      ...(declared ? { upload_sha256: declared } : {}),
    });
    await saveState(opts.stateDir, identity, image.id);
  }

  const result: UploadResult = {
    image_id: image.id,
    status: image.status,
    resumed,
    method: "none",
    part_size: null,
    part_count: null,
    uploaded_parts: [],
    skipped_parts: [],
    bytes_uploaded: 0,
    sha256: declared ?? null,
    sha256_declared: declared !== undefined || (image.upload_sha256 ?? null) !== null,
    size: null,
    checksum: null,
    os_hash_algo: null,
    os_hash_value: null,
    failure: null,
  };

  const agents = createAgents(Math.max(1, opts.parallel));
  try {
    if (image.status === "queued") {
      const link = image.upload;
      if (!link) throw new Error(`image ${image.id} is queued but offers this caller no upload link`);
      if (link.method === "multipart") {
        try {
          await uploadParts(client, image.id, link, path, info.size, opts, agents, result);
        } catch (err) {
          if (!(err instanceof HangarApiError && err.reason === "DIGEST_CONFLICT")) throw err;
          // The file changed in place since this image was created: resuming can never succeed.
          await clearState(opts.stateDir, identity);
          throw new FileChangedError(image.id);
        }
      } else {
        result.method = "PUT";
        ev.begin?.({ imageId: image.id, resumed, method: "PUT", bytes: info.size });
        const hash = createHash("sha256");
        const tap = new Transform({
          highWaterMark: READ_CHUNK,
          transform(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            cb(null, chunk);
          },
        });
        const source = createReadStream(path, { highWaterMark: READ_CHUNK }).pipe(tap);
        try {
          await sendPresigned(link, source, { agents, signal: opts.signal, onBytes: (n) => ev.bytes?.(n) });
        } catch (err) {
          if (opts.signal?.aborted) throw new UploadInterruptedError(image.id);
          throw err;
        }
        result.bytes_uploaded = info.size;
        result.sha256 = hash.digest("hex");
      }
    }
  } finally {
    agents.http.destroy();
    agents.https.destroy();
  }

  if (!opts.wait) return result;
  ev.note?.(`waiting for image ${image.id} to be imported`);
  const final = await waitForImage(client, image.id, {
    timeoutMs: opts.waitTimeoutMs,
    signal: opts.signal,
  });
  if (final.status === "active" || final.status === "killed") await clearState(opts.stateDir, identity);
  return {
    ...result,
    status: final.status,
    size: final.size ?? null,
    checksum: final.checksum ?? null,
    os_hash_algo: final.os_hash_algo ?? null,
    os_hash_value: final.os_hash_value ?? null,
    failure: final.failure ?? null,
  };
}

/** The multipart path: skip parts storage holds with the right size, send the others, complete with the sha256. */
async function uploadParts(
  client: HangarClient,
  imageId: string,
  plan: MultipartPlan,
  path: string,
  size: number,
  opts: UploadOptions,
  agents: Agents,
  result: UploadResult,
): Promise<void> {
  const ev = opts.events ?? {};
  const { part_size: partSize, part_count: partCount } = plan;
  const lengthOf = (n: number) => (n < partCount ? partSize : size - partSize * (partCount - 1));
  if (lengthOf(partCount) <= 0 || lengthOf(partCount) > partSize) {
    throw new Error(
      `the image's plan (${partCount} parts of ${partSize}) does not fit this file of ${size} bytes`,
    );
  }
  result.method = "multipart";
  result.part_size = partSize;
  result.part_count = partCount;

  const stored = new Map((await client.listParts(plan)).parts.map((p) => [p.part_number, p.size]));
  const toSend: number[] = [];
  for (let n = 1; n <= partCount; n++) if (stored.get(n) !== lengthOf(n)) toSend.push(n);
  const bytesToSend = toSend.reduce((s, n) => s + lengthOf(n), 0);
  ev.begin?.({ imageId, resumed: result.resumed, method: "multipart", bytes: bytesToSend, partCount });
  if (stored.size > 0) ev.note?.(`${partCount - toSend.length} of ${partCount} parts already in storage`);

  // Part links are signed in batches ahead of use and re-signed when close to expiry or refused as expired.
  const links = new Map<number, Promise<SignedPart>>();
  const signBatch = (from: number) => {
    const batch = toSend.filter((n) => n >= from && !links.has(n)).slice(0, SIGN_BATCH);
    const request = client.signParts(plan, batch);
    for (const n of batch)
      links.set(
        n,
        request.then((parts) => parts.find((p) => p.part_number === n) as SignedPart),
      );
    request.catch(() => {
      for (const n of batch) links.delete(n);
    });
  };
  const linkFor = async (n: number, fresh: boolean): Promise<SignedPart> => {
    if (fresh) links.delete(n);
    if (!links.has(n)) signBatch(n);
    const link = await (links.get(n) as Promise<SignedPart>);
    if (Date.parse(link.expires_at) - Date.now() < 60_000) {
      links.delete(n);
      signBatch(n);
      return links.get(n) as Promise<SignedPart>;
    }
    return link;
  };

  const sendPart = async (n: number, buf: Buffer): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      let sent = 0;
      try {
        const link = await linkFor(n, attempt > 1);
        await sendPresigned(link, buf, {
          agents,
          signal: opts.signal,
          onBytes: (k) => {
            sent += k;
            ev.bytes?.(k);
          },
        });
        return;
      } catch (err) {
        // Progress counted for a failed attempt is taken back so the bar stays honest.
        if (sent > 0) ev.bytes?.(-sent);
        if (opts.signal?.aborted) throw err;
        const retry = err instanceof StorageError && (err.transient || err.expired);
        if (!retry || attempt >= PART_ATTEMPTS) throw err;
        ev.note?.(`part ${n}: ${(err as Error).message}; retrying`);
        await sleep(250 * 2 ** attempt);
      }
    }
  };

  const hash = createHash("sha256");
  const fh = await open(path, "r");
  const inflight = new Set<Promise<void>>();
  let failure: unknown;
  try {
    for (let n = 1; n <= partCount; n++) {
      if (failure !== undefined || opts.signal?.aborted) break;
      // Bounded memory: read the next part only when a slot is free.
      while (inflight.size >= Math.max(1, opts.parallel)) await Promise.race(inflight);
      if (failure !== undefined) break;
      const buf = Buffer.allocUnsafe(lengthOf(n));
      await readFully(fh, buf, (n - 1) * partSize);
      // Every part is hashed, sent or not, in order: the whole file's sha256 comes from this one read.
      hash.update(buf);
      if (stored.get(n) === buf.length) {
        result.skipped_parts.push(n);
        ev.part?.({ partNumber: n, partCount, uploaded: false });
        continue;
      }
      const task: Promise<void> = sendPart(n, buf).then(
        () => {
          result.uploaded_parts.push(n);
          result.bytes_uploaded += buf.length;
          ev.part?.({ partNumber: n, partCount, uploaded: true });
        },
        (err: unknown) => {
          failure ??= err;
        },
      );
      const tracked = task.finally(() => inflight.delete(tracked));
      inflight.add(tracked);
    }
    // On failure, wait for the parts still in flight so none is left half-sent; storage keeps the finished ones.
    await Promise.all(inflight);
  } finally {
    await fh.close();
  }
  result.uploaded_parts.sort((a, b) => a - b);
  if (opts.signal?.aborted) throw new UploadInterruptedError(imageId);
  if (failure !== undefined) throw failure;

  const sha256 = hash.digest("hex");
  result.sha256 = sha256;
  result.sha256_declared = true;
  await client.completeUpload(plan, sha256);
}
