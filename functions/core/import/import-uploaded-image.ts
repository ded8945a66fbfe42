import {
  HangarError,
  IMPORT_FAILURE_REASONS,
  type ImportFailureReason,
  ImportRejectedError,
  StaleStatusError,
} from "../errors.ts";
import { type ImageRecord, imageIdFromStagingKey, imageKey, spoolKey } from "../image/image.ts";
import { abortLeftoverWrites } from "../leftovers.ts";
import type { Clock, ImageRepository, Logger, ObjectStore } from "../ports.ts";
import { QuotaExceededError } from "../quota.ts";
import { type ImportPolicy, type PipelineResult, runPipeline } from "./pipeline.ts";

type PermanentError = HangarError & { reason: ImportFailureReason };

/** Failures that retrying cannot mend: the image goes `killed` with the error's reason. */
const isPermanent = (err: unknown): err is PermanentError =>
  err instanceof HangarError && (IMPORT_FAILURE_REASONS as readonly string[]).includes(err.reason);

const TAKES_UPLOADS = new Set(["queued", "importing"]);

export interface ImporterDeps {
  images: ImageRepository;
  objects: ObjectStore;
  clock: Clock;
  log: Logger;
  osHashAlgo: "sha256" | "sha384" | "sha512";
  /** How long one importer holds an image before a redelivered event may take it over. */
  leaseSeconds: number;
  policy: ImportPolicy;
  /** Least interval between two writes of import progress to the record. */
  progressIntervalMs: number;
}

export type ImportOutcome =
  | { outcome: "active"; image: ImageRecord }
  | { outcome: "killed"; image: ImageRecord }
  | { outcome: "ignored"; why: string };

/**
 * Imports the object that arrived at a staging key: takes the image `queued → importing`, reads the upload
 * once as a stream (size, md5, `os_hash_algo`, declared sha256), stores it under `images/<id>`, and ends
 * `active`, or `killed` with a reason for a permanent failure. Transient failures give the image back to
 * `queued` and rethrow so the event is retried. Events for unknown, deleted or already imported images,
 * and duplicates, change nothing.
 */
export function createImporter(deps: ImporterDeps) {
  const { images, objects, clock, log } = deps;

  /** Takes the image for this import; `killed` when the project's quota cannot take the upload. */
  async function begin(
    id: string,
    key: string,
    size: number,
  ): Promise<ImageRecord | { killed: ImageRecord } | undefined> {
    const now = clock.now();
    const leaseUntil = new Date(now.getTime() + deps.leaseSeconds * 1000).toISOString();
    try {
      return await images.transition(
        id,
        "startImport",
        {
          updated_at: now.toISOString(),
          import_lease_until: leaseUntil,
          import_progress: { bytes_read: 0, total: size, updated_at: now.toISOString() },
        },
        { allowExpiredLeaseFrom: "importing", now: now.toISOString() },
      );
    } catch (err) {
      if (err instanceof StaleStatusError) return undefined;
      if (err instanceof QuotaExceededError) {
        // An upload nobody declared, too large for what the project has left: refuse it, free the storage.
        await objects.delete(key);
        log.warn("import refused by quota", { imageId: id, detail: err.message });
        try {
          const killed = await images.transition(id, "failImport", {
            updated_at: now.toISOString(),
            failure: { reason: err.reason, message: err.message },
            import_lease_until: null,
          });
          return { killed };
        } catch (e) {
          if (e instanceof StaleStatusError) return undefined;
          throw e;
        }
      }
      throw err;
    }
  }

  async function kill(image: ImageRecord, stagedKey: string, err: PermanentError): Promise<ImageRecord> {
    await objects.delete(imageKey(image.id));
    await objects.delete(stagedKey);
    log.warn("import rejected", { imageId: image.id, reason: err.reason, detail: err.message });
    return images.transition(image.id, "failImport", {
      updated_at: clock.now().toISOString(),
      failure: { reason: err.reason, message: err.message },
      import_lease_until: null,
    });
  }

  /** Writes import progress at most every `progressIntervalMs`; advisory, so failures are only logged. */
  function progressReporter(image: ImageRecord, total: number): (bytesRead: number) => void {
    let lastReport = Date.now();
    return (bytesRead) => {
      if (Date.now() - lastReport < deps.progressIntervalMs) return;
      lastReport = Date.now();
      const progress = { bytes_read: bytesRead, total, updated_at: clock.now().toISOString() };
      images.update(image.id, { import_progress: progress }, ["importing"]).catch((e: unknown) => {
        log.warn("progress update failed", { imageId: image.id, error: String(e) });
      });
    };
  }

  async function run(image: ImageRecord, stagedKey: string, size: number): Promise<ImageRecord> {
    if (size === 0) {
      throw new ImportRejectedError("EMPTY_UPLOAD", "The uploaded object is empty.");
    }
    if (image.upload_size !== null && size !== image.upload_size) {
      throw new ImportRejectedError(
        "SIZE_MISMATCH",
        `The upload has ${size} bytes but the image declared upload_size ${image.upload_size}.`,
      );
    }
    const controller = new AbortController();
    let result: PipelineResult;
    try {
      result = await runPipeline({
        key: stagedKey,
        outputKey: imageKey(image.id),
        spoolKey: spoolKey(image.id),
        size,
        declaredFormat: image.disk_format,
        declaredSha256: image.upload_sha256 !== null,
        osHashAlgo: deps.osHashAlgo,
        policy: deps.policy,
        objects,
        signal: controller.signal,
        onProgress: progressReporter(image, size),
      });
    } finally {
      controller.abort();
    }
    const sha256 = result.upload.sha256;
    if (image.upload_sha256 !== null && sha256 !== image.upload_sha256) {
      throw new ImportRejectedError(
        "DIGEST_MISMATCH",
        `The upload's sha256 is ${sha256} but the image declared upload_sha256 ${image.upload_sha256}.`,
      );
    }
    const now = clock.now().toISOString();
    log.info("import inspected", {
      imageId: image.id,
      format: result.detected.format,
      compression: result.detected.compression,
      storedFormat: result.storedFormat,
      virtualSize: result.inspection.virtualSize,
      spooled: result.spooled,
      checks: result.inspection.checks.map((c) => c.name),
    });
    return images.transition(image.id, "finishImport", {
      updated_at: now,
      size: result.storedSize,
      virtual_size: result.inspection.virtualSize,
      disk_format: result.storedFormat,
      checksum: result.stored.md5 ?? null,
      os_hash_algo: deps.osHashAlgo,
      os_hash_value: result.stored[deps.osHashAlgo] ?? null,
      source_format:
        result.detected.compression === "gzip" ? `${result.detected.format}+gzip` : result.detected.format,
      converted: result.converted,
      import_progress: { bytes_read: result.uploadBytes, total: size, updated_at: now },
      import_lease_until: null,
    });
  }

  return {
    async importStagedObject(key: string): Promise<ImportOutcome> {
      const id = imageIdFromStagingKey(key);
      if (!id) return { outcome: "ignored", why: `not a staging key Hangar generated: ${key}` };
      const info = await objects.head(key);
      if (!info) return { outcome: "ignored", why: `staged object ${key} is gone` };
      const image = await begin(id, key, info.size);
      if (image && "killed" in image) return { outcome: "killed", image: image.killed };
      if (!image) {
        const current = await images.get(id);
        // A late or repeated upload for an image that is done (or gone) is garbage: free the storage.
        // One still `queued` or `importing` belongs to the importer holding it.
        if (!current || !TAKES_UPLOADS.has(current.status)) await objects.delete(key);
        return {
          outcome: "ignored",
          why: `image ${id} is ${current?.status ?? "gone"}, not waiting for an upload`,
        };
      }
      log.info("import started", { imageId: id, size: info.size });
      const started = Date.now();
      try {
        // Multipart writes an earlier attempt left here when it crashed: aborted before and after ours.
        await abortLeftoverWrites(objects, id);
        const done = await run(image, key, info.size);
        await abortLeftoverWrites(objects, id).catch(() => 0);
        await objects.delete(key);
        const seconds = (Date.now() - started) / 1000;
        log.info("import finished", {
          imageId: id,
          size: done.size,
          seconds,
          // Upload bytes read per second: what an operator compares across imports and memory sizes.
          uploadMBps: seconds > 0 ? Math.round(info.size / seconds / 1e6) : null,
        });
        return { outcome: "active", image: done };
      } catch (err) {
        if (isPermanent(err)) {
          try {
            return { outcome: "killed", image: await kill(image, key, err) };
          } catch (e) {
            if (e instanceof StaleStatusError)
              return { outcome: "ignored", why: "image changed while importing" };
            throw e;
          }
        }
        await objects.delete(imageKey(id)).catch(() => undefined);
        if (err instanceof StaleStatusError) {
          // Deleted (or taken over) while importing: whatever was written is not ours to keep.
          return { outcome: "ignored", why: `image ${id} changed while importing` };
        }
        await images
          .transition(id, "releaseImport", {
            updated_at: clock.now().toISOString(),
            import_lease_until: null,
          })
          .catch((e: unknown) => log.warn("could not release image", { imageId: id, error: String(e) }));
        if (!(err instanceof HangarError))
          log.error("import failed, will be retried", { imageId: id, error: String(err) });
        throw err;
      }
    },
  };
}

export type Importer = ReturnType<typeof createImporter>;
