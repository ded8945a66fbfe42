import { StaleStatusError } from "./errors.ts";
import {
  type ImageRecord,
  imageIdFromStagingKey,
  STAGING_PREFIX,
  type StoredObject,
  stagingKey,
  storedObject,
} from "./image/image.ts";
import { HANDED_OVER } from "./image/transitions.ts";
import { abortLeftoverWrites, importWriteKeys, writeKeyOwner } from "./leftovers.ts";
import type { Clock, ImageRepository, ListedVersion, Logger, ObjectStore } from "./ports.ts";
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
  /**
   * Versions (and delete markers) of an upload an image keeps as its data, other than the kept one:
   * written to the upload link after the import, their storage event lost.
   */
  deletedVersions: number;
}

/** The reason a stalled import leaves on the image. */
export const IMPORT_STALLED = "IMPORT_STALLED";

/**
 * A version at the key of an upload an image keeps as its data (`kept` has a version there) that is not
 * the kept one. An image whose data is elsewhere, or unversioned, keeps nothing under `staging/`.
 */
export function isOverwrite(kept: StoredObject, version: Pick<ListedVersion, "key" | "versionId">): boolean {
  return (
    kept.version_id !== undefined &&
    kept.key.startsWith(STAGING_PREFIX) &&
    kept.key === version.key &&
    kept.version_id !== version.versionId
  );
}

/**
 * When an import's lease ran out. An image a web-download handed to the importer carries the
 * `HANDED_OVER` lease, long expired by design: its stall clock starts at the hand-over instead.
 */
function leaseEndMs(image: ImageRecord): number {
  if (image.import_lease_until === HANDED_OVER) return Date.parse(image.updated_at);
  return image.import_lease_until ? Date.parse(image.import_lease_until) : 0;
}

/**
 * Housekeeping, run on a schedule: aborts abandoned multipart uploads and deletes stale staged objects
 * under `staging/`, resets the plans of the queued images they belonged to, kills images whose importer
 * died holding them, and deletes versions written over an upload an image keeps as its data. Memory holds
 * one listing entry per upload in progress, one record per image (the repository's full listing, needed
 * because MinIO cannot list uploads by prefix) and one entry per version to delete.
 */
export function createSweeper(deps: SweepDeps) {
  const { images, objects, uploads, clock, log } = deps;

  /** When the upload last saw a part; without parts, when Hangar started it. */
  async function lastActivity(upload: PendingUpload, image: ImageRecord | undefined): Promise<number> {
    const parts = (await uploads.listParts(upload.key, upload.uploadId)) ?? [];
    const times = parts.flatMap((p) => (p.lastModified ? [Date.parse(p.lastModified)] : []));
    if (times.length > 0) return Math.max(...times);
    // MinIO reports the time of the listing as `Initiated`; the record knows when the upload really began.
    if (image?.multipart_upload_id === upload.uploadId && image.multipart_started_at) {
      return Date.parse(image.multipart_started_at);
    }
    return upload.initiated ? Date.parse(upload.initiated) : 0;
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
  async function killStalled(
    image: ImageRecord,
    stagedKey: string | undefined,
    report: SweepReport,
  ): Promise<void> {
    const now = clock.now().toISOString();
    try {
      // Conditional on `importing` only: a redelivered event could take over an expired lease in the instant
      // between our read and this write; that importer then loses its final write and cleans up after itself.
      await images.transition(image.id, "failImport", {
        updated_at: now,
        failure: {
          reason: IMPORT_STALLED,
          message: `The import stopped without finishing (its lease expired at ${new Date(leaseEndMs(image)).toISOString()}). Upload the image again.`,
        },
        import_lease_until: null,
      });
    } catch (err) {
      if (err instanceof StaleStatusError) return;
      throw err;
    }
    report.killedImports++;
    log.warn("stalled import killed", { imageId: image.id, leaseUntil: image.import_lease_until });
    if (stagedKey !== undefined) {
      await objects.delete(stagedKey);
      report.deletedObjects++;
    }
    // The dead importer may have left its own multipart writes of the stored image and spool behind.
    for (const key of importWriteKeys(image.id)) await objects.delete(key);
    report.abortedUploads += await abortLeftoverWrites(objects, image.id);
  }

  /** Uploads in progress at exactly `key` (MinIO lists them only by whole key). */
  async function pendingAt(key: string): Promise<PendingUpload[]> {
    return (await uploads.listPending(key)).filter((u) => u.key === key);
  }

  /** Uploads under each prefix, and at each key, once each. */
  async function pendingUnder(prefixes: string[], keys: string[]): Promise<PendingUpload[]> {
    const found = new Map<string, PendingUpload>();
    for (const prefix of prefixes)
      for (const u of await uploads.listPending(prefix)) found.set(u.uploadId, u);
    for (const key of keys) for (const u of await pendingAt(key)) found.set(u.uploadId, u);
    return [...found.values()];
  }

  /**
   * Multipart writes of stored images and spools (`images/<id>`, `spool/<id>`) whose import is over: an
   * importer that crashed mid-write leaves them, and only an `importing` image's importer still writes. S3
   * lists them by prefix; MinIO only by whole key, so the keys of images an import may have just left
   * (queued after a failed attempt, killed, or changed since `since`) are asked one by one as well.
   */
  async function abortOrphanedWrites(records: ImageRecord[], since: number, report: SweepReport) {
    const mayHoldWrites = (image: ImageRecord) =>
      image.status === "queued" ||
      image.status === "killed" ||
      (Date.parse(image.updated_at) >= since && image.status !== "importing");
    const keys = records.filter(mayHoldWrites).flatMap((image) => importWriteKeys(image.id));
    for (const upload of await pendingUnder(["images/", "spool/"], keys)) {
      const id = writeKeyOwner(upload.key);
      // Read after listing: an upload listed while its import ran is judged by where the import is now.
      const image = id ? await images.get(id) : undefined;
      if (image?.status === "importing") continue;
      await uploads.abort(upload.key, upload.uploadId);
      report.abortedUploads++;
      log.info("orphaned image write aborted", { key: upload.key, imageId: id, status: image?.status });
    }
  }

  /**
   * Uploads in progress under `staging/`. S3 lists them by prefix; MinIO only for an exact key, so the keys of
   * images that may hold one (queued, killed, or recording an upload) are asked one by one as well.
   */
  function pendingUploads(records: ImageRecord[]): Promise<PendingUpload[]> {
    const mayHoldUpload = (image: ImageRecord) =>
      image.status === "queued" || image.status === "killed" || Boolean(image.multipart_upload_id);
    return pendingUnder(
      [STAGING_PREFIX],
      records.filter(mayHoldUpload).map((image) => stagingKey(image.id)),
    );
  }

  /** One sweep's view: the time it started, the cutoff for abandonment, the records it read once each. */
  interface Pass {
    nowMs: number;
    cutoff: number;
    imageOf(id: string | undefined): Promise<ImageRecord | undefined>;
    report: SweepReport;
  }

  /** Aborts uploads with no part for too long, and resets the plan of a queued image that held one. */
  async function abortAbandonedUploads(records: ImageRecord[], pass: Pass): Promise<void> {
    for (const upload of await pendingUploads(records)) {
      const id = imageIdFromStagingKey(upload.key);
      const image = await pass.imageOf(id);
      if ((await lastActivity(upload, image)) >= pass.cutoff) continue;
      await uploads.abort(upload.key, upload.uploadId);
      pass.report.abortedUploads++;
      log.info("abandoned upload aborted", { key: upload.key, imageId: id, status: image?.status });
      if (image?.status === "queued" && image.multipart_upload_id === upload.uploadId) {
        await resetPlan(image, pass.report);
      }
    }
  }

  /** An import whose lease expired more than the grace period ago. */
  const stalled = (image: ImageRecord, nowMs: number) =>
    image.status === "importing" && leaseEndMs(image) + deps.stalledImportGraceSeconds * 1000 < nowMs;

  /**
   * Deletes staged objects left too long, and kills stalled imports of staged ones; returns the images
   * whose bytes are staged while they import.
   */
  async function sweepStagedObjects(pass: Pass): Promise<Set<string>> {
    const staged = new Set<string>();
    for (const object of await uploads.listObjects(STAGING_PREFIX)) {
      const id = imageIdFromStagingKey(object.key);
      const image = await pass.imageOf(id);
      if (image?.status === "importing") {
        staged.add(image.id);
        if (stalled(image, pass.nowMs)) await killStalled(image, object.key, pass.report);
        continue;
      }
      // The image's own data, kept where it was uploaded: never stale. A later upload over it is deleted
      // by its own storage event (by version); what a lost event left, `deleteOverwrites` deletes.
      if (image && storedObject(image).key === object.key) continue;
      const modified = object.lastModified ? Date.parse(object.lastModified) : 0;
      if (modified >= pass.cutoff) continue;
      // Queued this long with its bytes staged means the storage event was lost; anything else is leftover.
      await objects.delete(object.key);
      pass.report.deletedObjects++;
      log.info("stale staged object deleted", { key: object.key, imageId: id, status: image?.status });
    }
    return staged;
  }

  /**
   * Versions of a kept upload's key other than the kept one, older than the cutoff: a client PUT to the
   * upload link after the import, and its storage event (which deletes that version) never came. A newer
   * one may still have its event on the way. Listed first, then deleted by version: only what the listing
   * named goes, never the kept version, and the record and its quota usage stay as they are.
   */
  async function deleteOverwrites(pass: Pass): Promise<void> {
    const leftovers: ListedVersion[] = [];
    for await (const version of objects.listVersions(STAGING_PREFIX)) {
      const modified = version.lastModified ? Date.parse(version.lastModified) : 0;
      if (modified >= pass.cutoff) continue;
      const image = await pass.imageOf(imageIdFromStagingKey(version.key));
      if (image && isOverwrite(storedObject(image), version)) leftovers.push(version);
    }
    for (const version of leftovers) {
      await objects.delete(version.key, version.versionId);
      pass.report.deletedVersions++;
      log.info("overwrite of a kept upload deleted", {
        imageId: imageIdFromStagingKey(version.key),
        key: version.key,
        versionId: version.versionId,
        deleteMarker: version.deleteMarker,
      });
    }
  }

  return {
    /** One sweep over `staging/`; safe to run concurrently with uploads, imports and another sweep. */
    async sweep(): Promise<SweepReport> {
      const report: SweepReport = {
        abortedUploads: 0,
        deletedObjects: 0,
        resetImages: 0,
        killedImports: 0,
        deletedVersions: 0,
      };
      const nowMs = clock.now().getTime();
      const cache = new Map<string, ImageRecord | undefined>();
      const pass: Pass = {
        nowMs,
        cutoff: nowMs - deps.abandonAfterSeconds * 1000,
        report,
        async imageOf(id) {
          if (id === undefined) return undefined;
          if (!cache.has(id)) cache.set(id, await images.get(id));
          return cache.get(id);
        },
      };
      const records = await images.listAll();
      await abortAbandonedUploads(records, pass);
      const staged = await sweepStagedObjects(pass);
      await deleteOverwrites(pass);
      // Held with nothing staged: a web-download that died before its bytes were staged.
      for (const image of records) {
        if (!staged.has(image.id) && stalled(image, nowMs)) await killStalled(image, undefined, report);
      }
      await abortOrphanedWrites(records, pass.cutoff, report);
      log.info("sweep finished", { ...report });
      return report;
    },
  };
}

export type Sweeper = ReturnType<typeof createSweeper>;
