import { StaleStatusError } from "./errors.ts";
import { type ImageRecord, imageIdFromStagingKey, imageKey } from "./image/image.ts";
import type { Clock, ImageRepository, Logger, ObjectStore } from "./ports.ts";
import type { MultipartUploads, PendingUpload } from "./uploads/ports.ts";

export interface SweepDeps {
  images: ImageRepository;
  objects: ObjectStore;
  uploads: MultipartUploads;
  clock: Clock;
  log: Logger;
  /** Uploads with no new part for this long, and staged objects this old, are abandoned. */
  abandonAfterSeconds: number;
  /** Time after an import lease expired before the import counts as stalled. */
  stalledImportGraceSeconds: number;
}

export interface SweepReport {
  /** Storage multipart uploads aborted (abandoned or orphaned). */
  abortedUploads: number;
  /** Staged objects deleted (their image is gone, finished, or waited too long for its import). */
  deletedObjects: number;
  /** Queued images whose record no longer claims an upload in progress. */
  resetImages: number;
  /** Images killed with `IMPORT_STALLED` because their importer died holding them. */
  killedImports: number;
}

const STAGING_PREFIX = "staging/";

/** The reason a stalled import leaves on the image. */
export const IMPORT_STALLED = "IMPORT_STALLED";

/**
 * Housekeeping, run on a schedule: aborts abandoned multipart uploads and deletes stale staged objects
 * under `staging/`, resets the plans of the queued images they belonged to, and kills images whose importer
 * died holding them. Memory holds one listing entry per upload in progress, not per image.
 */
export function createSweeper(deps: SweepDeps) {
  const { images, objects, uploads, clock, log } = deps;

  async function lastActivity(upload: PendingUpload): Promise<number> {
    const parts = (await uploads.listParts(upload.key, upload.uploadId)) ?? [];
    let latest = upload.initiated ? Date.parse(upload.initiated) : 0;
    for (const p of parts) if (p.lastModified) latest = Math.max(latest, Date.parse(p.lastModified));
    return latest;
  }

  /** Clears the record's claim to an upload; the next part request starts a fresh one. */
  async function resetPlan(image: ImageRecord, report: SweepReport): Promise<void> {
    try {
      await images.update(
        image.id,
        { multipart_upload_id: null, multipart_started_at: null, updated_at: clock.now().toISOString() },
        ["queued"],
      );
      report.resetImages++;
    } catch (err) {
      // The image moved on meanwhile (deleted, or an import began): nothing left to reset.
      if (!(err instanceof StaleStatusError)) throw err;
    }
  }

  /** Kills an import whose lease expired long ago: its Lambda died and its retries are spent. */
  async function killStalled(image: ImageRecord, stagedKey: string, report: SweepReport): Promise<void> {
    const now = clock.now().toISOString();
    try {
      // Conditional on `importing` only: a redelivered event could take over an expired lease in the instant
      // between our read and this write; that importer then loses its final write and cleans up after itself.
      await images.transition(image.id, "failImport", {
        updated_at: now,
        failure: {
          reason: IMPORT_STALLED,
          message: `The import stopped without finishing (its lease expired at ${image.import_lease_until}). Upload the image again.`,
        },
        import_lease_until: null,
      });
    } catch (err) {
      if (err instanceof StaleStatusError) return;
      throw err;
    }
    report.killedImports++;
    log.warn("stalled import killed", { imageId: image.id, leaseUntil: image.import_lease_until });
    await objects.delete(stagedKey);
    report.deletedObjects++;
    // The dead importer may have left its own multipart write of the stored image behind.
    await objects.delete(imageKey(image.id));
    for (const u of await uploads.listPending(imageKey(image.id))) {
      if (u.key === imageKey(image.id)) await uploads.abort(u.key, u.uploadId);
    }
  }

  return {
    /** One sweep over `staging/`; safe to run concurrently with uploads, imports and another sweep. */
    async sweep(): Promise<SweepReport> {
      const report: SweepReport = { abortedUploads: 0, deletedObjects: 0, resetImages: 0, killedImports: 0 };
      const nowMs = clock.now().getTime();
      const cutoff = nowMs - deps.abandonAfterSeconds * 1000;
      const cache = new Map<string, ImageRecord | undefined>();
      const imageOf = async (id: string) => {
        if (!cache.has(id)) cache.set(id, await images.get(id));
        return cache.get(id);
      };

      for (const upload of await uploads.listPending(STAGING_PREFIX)) {
        if ((await lastActivity(upload)) >= cutoff) continue;
        await uploads.abort(upload.key, upload.uploadId);
        report.abortedUploads++;
        const id = imageIdFromStagingKey(upload.key);
        const image = id ? await imageOf(id) : undefined;
        log.info("abandoned upload aborted", { key: upload.key, imageId: id, status: image?.status });
        if (image?.status === "queued" && image.multipart_upload_id === upload.uploadId) {
          await resetPlan(image, report);
        }
      }

      for (const object of await uploads.listObjects(STAGING_PREFIX)) {
        const id = imageIdFromStagingKey(object.key);
        const image = id ? await imageOf(id) : undefined;
        if (image?.status === "importing") {
          const leaseEnd = image.import_lease_until ? Date.parse(image.import_lease_until) : 0;
          if (leaseEnd + deps.stalledImportGraceSeconds * 1000 < nowMs) {
            await killStalled(image, object.key, report);
          }
          continue;
        }
        const modified = object.lastModified ? Date.parse(object.lastModified) : 0;
        if (modified >= cutoff) continue;
        // Queued this long with its bytes staged means the storage event was lost; anything else is leftover.
        await objects.delete(object.key);
        report.deletedObjects++;
        log.info("stale staged object deleted", { key: object.key, imageId: id, status: image?.status });
      }

      log.info("sweep finished", { ...report });
      return report;
    },
  };
}

export type Sweeper = ReturnType<typeof createSweeper>;
