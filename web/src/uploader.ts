/**
 * Uppy's uploader for Hangar: follows the links Hangar's create response gives — one presigned PUT, or
 * a multipart plan (`parts_url` to list and sign parts, `complete_url` to finish) — instead of talking
 * S3's own protocol as `@uppy/aws-s3` does (docs/decisions/0004-browser-uploader.md says why).
 *
 * Per file: inspect (refuse before a byte is sent) → create the image, or find the one an earlier
 * attempt at the same file created → send the bytes → hand the image to the page, which follows its
 * import. Pause aborts the requests in flight; resume, a retry, or the same file added again after a
 * reload asks storage which parts it holds and sends only the others.
 *
 * Memory: a multipart upload holds at most (parallel + 1) parts; a single PUT sends the File itself.
 */
import { BasePlugin, type Body, type Meta, type PluginOpts, type Uppy, type UppyFile } from "@uppy/core";
import { createSHA256 } from "hash-wasm";
import { HangarApiError, type HangarClient, type Image, type MultipartPlan } from "../../client/lib/api.ts";
import { type InspectLimits, inspectFile, type Verdict } from "./inspect.ts";
import { type Link, StorageError, sendToLink } from "./transfer.ts";

/** Files up to this size are hashed before create and declare their sha256 there, like the CLI does. */
export const PREHASH_LIMIT = 64 * 1024 * 1024;
const HASH_CHUNK = 4 * 1024 * 1024;
/** Part links signed per request. */
const SIGN_BATCH = 16;
const PART_ATTEMPTS = 3;
const RESUME_KEY = "hangar.uploads";
const PROGRESS_MS = 250;

/** What the page shows about a file as its upload goes. */
export interface UploadHooks {
  inspected(fileId: string, name: string, verdict: Verdict): void;
  imageKnown(fileId: string, image: Image, resumed: boolean): void;
  uploaded(fileId: string, image: Image, parts: { sent: number[]; skipped: number[] }): void;
  failed(fileId: string, message: string): void;
}

export interface HangarUploadOptions extends PluginOpts {
  client: HangarClient;
  limits: () => InspectLimits;
  /** The disk format the user chose, or undefined to take the detected one. */
  diskFormat: () => string | undefined;
  /** More fields for the create call (visibility). */
  fields: () => Record<string, string>;
  hooks: UploadHooks;
  /** Parts in flight at once. */
  parallel?: number;
}

/** `check: why`, without naming the check twice (the inspector's messages start with it). */
export function describeRefusal(verdict: Extract<Verdict, { ok: false }>): string {
  return verdict.message.startsWith(`${verdict.check}:`)
    ? verdict.message
    : `${verdict.check}: ${verdict.message}`;
}

/** The image refused by inspection; nothing was sent. */
export class RefusedError extends Error {
  override name = "RefusedError";
  constructor(readonly verdict: Extract<Verdict, { ok: false }>) {
    super(`refused before upload — ${describeRefusal(verdict)}`);
  }
}

/** Which image an earlier attempt at a file created, by the file's name, size and modification time. */
const resumeState = {
  key(file: File): string {
    return JSON.stringify([file.name, file.size, file.lastModified]);
  },
  all(): Record<string, string> {
    try {
      return JSON.parse(localStorage.getItem(RESUME_KEY) ?? "{}") as Record<string, string>;
    } catch {
      return {};
    }
  },
  get(file: File): string | undefined {
    return this.all()[this.key(file)];
  },
  set(file: File, imageId: string | undefined): void {
    const all = this.all();
    if (imageId === undefined) delete all[this.key(file)];
    else all[this.key(file)] = imageId;
    localStorage.setItem(RESUME_KEY, JSON.stringify(all));
  },
};

export function forgetResume(file: File): void {
  resumeState.set(file, undefined);
}

async function sha256Of(blob: Blob, signal: AbortSignal): Promise<string> {
  const hash = await createSHA256();
  hash.init();
  for (let at = 0; at < blob.size; at += HASH_CHUNK) {
    signal.throwIfAborted();
    hash.update(new Uint8Array(await blob.slice(at, at + HASH_CHUNK).arrayBuffer()));
  }
  return hash.digest("hex");
}

export class HangarUpload<M extends Meta, B extends Body> extends BasePlugin<HangarUploadOptions, M, B> {
  constructor(uppy: Uppy<M, B>, opts: HangarUploadOptions) {
    super(uppy, opts);
    this.id = opts.id ?? "HangarUpload";
    this.type = "uploader";
  }

  override install(): void {
    const { capabilities } = this.uppy.getState();
    this.uppy.setState({ capabilities: { ...capabilities, resumableUploads: true } });
    this.uppy.addUploader(this.upload);
  }

  override uninstall(): void {
    this.uppy.removeUploader(this.upload);
  }

  private readonly upload = async (fileIDs: string[]): Promise<void> => {
    const files = this.uppy.getFilesByIds(fileIDs).filter((f) => !f.progress.uploadComplete);
    this.uppy.emit("upload-start", files);
    await Promise.allSettled(files.map((f) => this.uploadOne(f.id)));
  };

  /** One file, until it is done, failed or removed; pause and resume restart its attempt. */
  private uploadOne(fileId: string): Promise<void> {
    return new Promise((resolve) => {
      let controller: AbortController | undefined;
      const offs: (() => void)[] = [];
      const finish = () => {
        controller?.abort();
        for (const off of offs) off();
        resolve();
      };
      const start = () => {
        controller?.abort();
        const current = new AbortController();
        controller = current;
        this.attempt(fileId, current.signal).then(
          (image) => {
            if (current.signal.aborted) return;
            const file = this.uppy.getFile(fileId);
            if (file) {
              this.uppy.emit("upload-success", file, {
                status: 200,
                body: { image_id: image.id } as unknown as B,
                uploadURL: `/v2/images/${image.id}`,
              });
            }
            finish();
          },
          (error: unknown) => {
            if (current.signal.aborted) return;
            const err = error instanceof Error ? error : new Error(String(error));
            this.opts.hooks.failed(fileId, err.message);
            finish();
            if (err instanceof RefusedError) {
              // Nothing to retry: the same bytes get the same verdict. The page keeps the verdict.
              this.uppy.info(err.message, "error", 6000);
              this.uppy.removeFile(fileId);
              return;
            }
            const file = this.uppy.getFile(fileId);
            if (file) this.uppy.emit("upload-error", file, err);
          },
        );
      };
      const on = <E extends Parameters<Uppy<M, B>["on"]>[0]>(
        event: E,
        fn: Parameters<Uppy<M, B>["on"]>[1],
      ) => {
        this.uppy.on(event, fn as never);
        offs.push(() => this.uppy.off(event, fn as never));
      };
      on("upload-pause", ((file: UppyFile<M, B> | undefined, paused: boolean) => {
        if (file?.id !== fileId) return;
        if (paused) controller?.abort();
        else start();
      }) as never);
      on("pause-all", (() => controller?.abort()) as never);
      on("resume-all", (() => start()) as never);
      on("file-removed", ((file: UppyFile<M, B>) => {
        if (file.id === fileId) finish();
      }) as never);
      on("cancel-all", (() => finish()) as never);
      start();
    });
  }

  private readonly lastProgress = new Map<string, number>();

  /** Tells Uppy of progress, at most every PROGRESS_MS per file (each report re-renders the dashboard). */
  private progress(fileId: string, sent: number, total: number): void {
    const now = performance.now();
    if (sent < total && now - (this.lastProgress.get(fileId) ?? 0) < PROGRESS_MS) return;
    this.lastProgress.set(fileId, now);
    const file = this.uppy.getFile(fileId);
    if (!file) return;
    this.uppy.emit("upload-progress", file, {
      uploadStarted: file.progress.uploadStarted ?? Date.now(),
      bytesUploaded: sent,
      bytesTotal: total,
    });
  }

  /** Inspect, create or find the image, send what storage lacks. */
  private async attempt(fileId: string, signal: AbortSignal): Promise<Image> {
    const file = this.uppy.getFile(fileId);
    const data = file?.data;
    if (!file || !(data instanceof File)) throw new Error("the file's data is not available; add it again");
    const { client, hooks } = this.opts;
    const verdict = await inspectFile(data, this.opts.limits(), this.opts.diskFormat());
    hooks.inspected(fileId, data.name, verdict);
    if (!verdict.ok) throw new RefusedError(verdict);
    signal.throwIfAborted();

    let image = await this.earlierImage(data);
    const resumed = image !== undefined;
    if (!image) {
      const sha256 = data.size <= PREHASH_LIMIT ? await sha256Of(data, signal) : undefined;
      signal.throwIfAborted();
      image = await client.createImage({
        name: data.name,
        disk_format: verdict.result.format,
        container_format: "bare",
        ...this.opts.fields(),
        upload_size: data.size,
        ...(sha256 ? { upload_sha256: sha256 } : {}),
      });
      resumeState.set(data, image.id);
    }
    hooks.imageKnown(fileId, image, resumed);
    if (image.status !== "queued") return image;
    const link = image.upload;
    if (!link) throw new Error(`image ${image.id} is queued but offers no upload link to this token`);
    if (link.method === "multipart") {
      const parts = await this.sendParts(fileId, link, data, signal);
      hooks.uploaded(fileId, image, parts);
    } else {
      await sendToLink(link, data, signal, (sent) => this.progress(fileId, sent, data.size));
      this.progress(fileId, data.size, data.size);
      hooks.uploaded(fileId, image, { sent: [], skipped: [] });
    }
    return image;
  }

  /** The image an earlier attempt at this file created, while it can still take (or has taken) the upload. */
  private async earlierImage(file: File): Promise<Image | undefined> {
    const id = resumeState.get(file);
    if (!id) return undefined;
    try {
      const image = await this.opts.client.getImage(id);
      if (["queued", "importing", "active"].includes(image.status)) return image;
    } catch (error) {
      if (!(error instanceof HangarApiError && error.status === 404)) throw error;
    }
    resumeState.set(file, undefined);
    return undefined;
  }

  /**
   * Sends the parts storage does not hold with their planned size, reading the file once in order so
   * its sha256 comes from the same read, and completes the upload declaring that sha256.
   */
  private async sendParts(
    fileId: string,
    plan: MultipartPlan,
    data: File,
    signal: AbortSignal,
  ): Promise<{ sent: number[]; skipped: number[] }> {
    const { client } = this.opts;
    const { part_size: partSize, part_count: partCount } = plan;
    const lengthOf = (n: number) => (n < partCount ? partSize : data.size - partSize * (partCount - 1));
    const stored = new Map((await client.listParts(plan)).parts.map((p) => [p.part_number, p.size]));
    const skipped: number[] = [];
    const sent: number[] = [];
    const partBytes = new Map<number, number>();
    let storedBytes = 0;
    const report = () => {
      let total = storedBytes;
      for (const n of partBytes.values()) total += n;
      this.progress(fileId, total, data.size);
    };

    const links = new Map<number, Promise<Link>>();
    const linkFor = (n: number, fresh: boolean): Promise<Link> => {
      if (fresh) links.delete(n);
      const existing = links.get(n);
      if (existing) return existing;
      const batch: number[] = [];
      for (let k = n; k <= partCount && batch.length < SIGN_BATCH; k++) {
        if (stored.get(k) !== lengthOf(k) && (k === n || !links.has(k))) batch.push(k);
      }
      const request = client.signParts(plan, batch);
      for (const k of batch) {
        links.set(
          k,
          request.then((parts) => {
            const part = parts.find((p) => p.part_number === k);
            if (!part) throw new Error(`Hangar signed no link for part ${k}`);
            return part;
          }),
        );
      }
      request.catch(() => {
        for (const k of batch) links.delete(k);
      });
      return links.get(n) as Promise<Link>;
    };
    const sendPart = async (n: number, body: Blob) => {
      for (let attempt = 1; ; attempt++) {
        try {
          const link = await linkFor(n, attempt > 1);
          await sendToLink(link, body, signal, (k) => {
            partBytes.set(n, k);
            report();
          });
          partBytes.set(n, body.size);
          return;
        } catch (error) {
          partBytes.delete(n);
          if (
            signal.aborted ||
            !(error instanceof StorageError && error.retryable) ||
            attempt >= PART_ATTEMPTS
          )
            throw error;
          await new Promise((r) => setTimeout(r, 300 * attempt));
        }
      }
    };

    const hash = await createSHA256();
    hash.init();
    const parallel = Math.max(1, this.opts.parallel ?? 3);
    const inflight = new Set<Promise<void>>();
    let failure: unknown;
    for (let n = 1; n <= partCount && failure === undefined; n++) {
      while (inflight.size >= parallel) await Promise.race(inflight);
      if (failure !== undefined || signal.aborted) break;
      // The part is read here for the hash; the request sends the slice itself, which the browser
      // streams from the file rather than copying the bytes out of this page.
      const part = data.slice((n - 1) * partSize, (n - 1) * partSize + lengthOf(n));
      const bytes = new Uint8Array(await part.arrayBuffer());
      hash.update(bytes);
      if (stored.get(n) === part.size) {
        skipped.push(n);
        storedBytes += part.size;
        report();
        continue;
      }
      const task: Promise<void> = sendPart(n, part).then(
        () => {
          sent.push(n);
        },
        (error: unknown) => {
          failure ??= error;
        },
      );
      const tracked = task.finally(() => inflight.delete(tracked));
      inflight.add(tracked);
    }
    await Promise.all(inflight);
    signal.throwIfAborted();
    if (failure !== undefined) throw failure;
    await client.completeUpload(plan, hash.digest("hex"));
    return { sent: sent.sort((a, b) => a - b), skipped };
  }
}
