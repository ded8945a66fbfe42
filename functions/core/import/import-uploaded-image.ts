import {
  HangarError,
  IMPORT_FAILURE_REASONS,
  type ImportFailureReason,
  ImportRejectedError,
  StaleStatusError,
} from "../errors.ts";
import type { FanoutSwitch } from "../fanout/start.ts";
import { type ImageRecord, imageIdFromStagingKey, imageKey, spoolKey, storedObject } from "../image/image.ts";
import { HANDED_OVER } from "../image/transitions.ts";
import { abortLeftoverWrites } from "../leftovers.ts";
import {
  type Clock,
  type ImageRepository,
  type Logger,
  ObjectChangedError,
  type ObjectInfo,
  type ObjectStore,
} from "../ports.ts";
import { QuotaExceededError } from "../quota.ts";
import { type ImportPolicy, type PipelineResult, runPipeline } from "./pipeline.ts";

type PermanentError = HangarError & { reason: ImportFailureReason };

/** Failures that retrying cannot mend: the image goes `killed` with the error's reason. */
const isPermanent = (err: unknown): err is PermanentError =>
  err instanceof HangarError && (IMPORT_FAILURE_REASONS as readonly string[]).includes(err.reason);

/** The write's result, or undefined when a concurrent change won (its condition failed). */
async function unlessStale<T>(write: Promise<T>): Promise<T | undefined> {
  try {
    return await write;
  } catch (e) {
    if (e instanceof StaleStatusError) return undefined;
    throw e;
  }
}

const TAKES_UPLOADS = new Set(["queued", "importing"]);
/** How often an event that found the image held looks at its lease again. */
const WATCH_POLL_MS = 2000;
/** Bounds the watch: enough rounds to wait out several leases. */
const MAX_ACQUIRE_ROUNDS = 256;

export interface ImporterDeps {
  images: ImageRepository;
  objects: ObjectStore;
  clock: Clock;
  log: Logger;
  osHashAlgo: "sha256" | "sha384" | "sha512";
  /**
   * How long an import lease lasts without renewal. A live importer renews it every third of that
   * (heartbeat); one that died loses it this long after its last renewal, and the next event takes over.
   */
  leaseSeconds: number;
  /** Imports of one image taken over from an importer that died holding it, before the image is killed. */
  maxTakeovers: number;
  policy: ImportPolicy;
  /** Least interval between two writes of import progress to the record. */
  progressIntervalMs: number;
  /** Waits `ms`; injected so tests can run the lease clock. */
  sleep?: (ms: number) => Promise<void>;
  /** Hands images above the fan-out threshold to the fan-out state machine (docs/scale.md). */
  fanout?: FanoutSwitch;
  /** Runs the import of an image once it is held (the composition root adds the image's context to it). */
  within?: <T>(image: ImageRecord, work: () => Promise<T>) => Promise<T>;
}

/** The import lease this importer held was renewed by nobody or taken over: stop, and touch nothing. */
export class LeaseLostError extends Error {
  override name = "LeaseLostError";
}

export type ImportOutcome =
  | { outcome: "active"; image: ImageRecord }
  | { outcome: "killed"; image: ImageRecord }
  /** Handed to a fan-out execution, which finishes (or kills) the image. */
  | { outcome: "fanned-out"; image: ImageRecord }
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

  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const leaseFrom = (now: Date) => new Date(now.getTime() + deps.leaseSeconds * 1000).toISOString();

  /**
   * Takes the image for this import, from `queued` or from an importer whose lease expired (a takeover,
   * counted: an image whose importers keep dying is killed). `killed` when the project's quota cannot take
   * the upload or the takeovers are spent; undefined when the image is not free.
   */
  async function begin(
    current: ImageRecord,
    key: string,
    size: number,
  ): Promise<ImageRecord | { killed: ImageRecord } | undefined> {
    const now = clock.now();
    const fromImporting = current.status === "importing";
    // A web-download handing over its staged bytes is no crashed importer: not counted as a takeover.
    const takeover = fromImporting && current.import_lease_until !== HANDED_OVER;
    const takeovers = (current.import_takeovers ?? 0) + (takeover ? 1 : 0);
    if (takeover && takeovers > deps.maxTakeovers) {
      const killed = await stopCrashing(current, key, takeovers - 1);
      return killed ? { killed } : undefined;
    }
    try {
      return await images.transition(
        current.id,
        "startImport",
        {
          updated_at: now.toISOString(),
          import_lease_until: leaseFrom(now),
          import_progress: { bytes_read: 0, total: size, updated_at: now.toISOString() },
          // A takeover also ends a fan-out execution's hold: its steps write only while it is named.
          ...(takeover ? { import_takeovers: takeovers, import_execution: null, import_fanout: null } : {}),
        },
        fromImporting
          ? {
              allowExpiredLeaseFrom: "importing",
              now: now.toISOString(),
              leaseIs: current.import_lease_until ?? "",
            }
          : {},
      );
    } catch (err) {
      if (err instanceof StaleStatusError) return undefined;
      if (err instanceof QuotaExceededError) return refuseOverQuota(current.id, key, now, err);
      throw err;
    }
  }

  /** An upload nobody declared, too large for what the project has left: refuse it, free the storage. */
  async function refuseOverQuota(id: string, key: string, now: Date, err: QuotaExceededError) {
    await objects.delete(key);
    log.warn("import refused by quota", { imageId: id, detail: err.message });
    const killed = await unlessStale(
      images.transition(id, "failImport", {
        updated_at: now.toISOString(),
        failure: { reason: err.reason, message: err.message },
        import_lease_until: null,
      }),
    );
    return killed ? { killed } : undefined;
  }

  /** Kills an image whose importers died holding it `times` times (out of memory, out of time, a crash). */
  async function stopCrashing(image: ImageRecord, stagedKey: string, times: number) {
    const message = `The import stopped without finishing ${times} times (the importer ran out of memory or time, or crashed). Upload the image again; if it fails again, ask the operator.`;
    const killed = await unlessStale(
      images.transition(
        image.id,
        "failImport",
        {
          updated_at: clock.now().toISOString(),
          failure: { reason: "IMPORT_CRASHED", message },
          import_lease_until: null,
        },
        { leaseIs: image.import_lease_until ?? "" },
      ),
    );
    if (!killed) return undefined;
    await objects.delete(stagedKey);
    log.warn("import rejected", { imageId: image.id, reason: "IMPORT_CRASHED", takeovers: times });
    return killed;
  }

  async function kill(
    image: ImageRecord,
    stagedKey: string,
    err: PermanentError,
    lease: string,
  ): Promise<ImageRecord> {
    await objects.delete(imageKey(image.id));
    await objects.delete(stagedKey);
    log.warn("import rejected", { imageId: image.id, reason: err.reason, detail: err.message });
    return images.transition(
      image.id,
      "failImport",
      {
        updated_at: clock.now().toISOString(),
        failure: { reason: err.reason, message: err.message },
        import_lease_until: null,
      },
      { leaseIs: lease },
    );
  }

  /**
   * Renews the import lease every third of its length while the import runs. When the lease is lost
   * (taken over, the image deleted) or cannot be renewed before it runs out, `onLost` is called once.
   */
  function heartbeat(id: string, firstLease: string, onLost: (why: unknown) => void) {
    let lease = firstLease;
    let stopped = false;
    const every = Math.max(1, Math.floor((deps.leaseSeconds * 1000) / 3));
    const beat = async () => {
      const next = leaseFrom(clock.now());
      try {
        await images.update(id, { import_lease_until: next }, ["importing"], {
          unchanged: { import_lease_until: lease },
        });
        lease = next;
      } catch (err) {
        if (err instanceof StaleStatusError) {
          onLost(err);
          stopped = true;
          return;
        }
        // Storage or database trouble: keep trying while the lease lasts; past it, someone may take over.
        log.warn("import lease not renewed", { imageId: id, error: String(err) });
        if (Date.parse(lease) <= clock.now().getTime()) {
          onLost(err);
          stopped = true;
        }
      }
    };
    let running: Promise<void> = Promise.resolve();
    const timer = setInterval(() => {
      if (stopped) return;
      running = running.then(beat);
    }, every);
    timer.unref?.();
    return {
      /** The lease as last renewed: the one the final write must still hold. */
      current: () => lease,
      async stop() {
        stopped = true;
        clearInterval(timer);
        await running;
      },
    };
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

  async function run(
    image: ImageRecord,
    staged: { key: string; size: number; etag: string | undefined; versionId: string | undefined },
    lease: { signal: AbortSignal; current(): string; stop(): Promise<void> },
  ): Promise<ImageRecord | { fannedOut: ImageRecord }> {
    const { key: stagedKey, size } = staged;
    if (size === 0) {
      throw new ImportRejectedError("EMPTY_UPLOAD", "The uploaded object is empty.");
    }
    if (image.upload_size !== null && size !== image.upload_size) {
      throw new ImportRejectedError(
        "SIZE_MISMATCH",
        `The upload has ${size} bytes but the image declared upload_size ${image.upload_size}.`,
      );
    }
    const job = await deps.fanout?.consider(
      image,
      { key: staged.key, size: staged.size, etag: staged.etag },
      lease.signal,
    );
    if (job && deps.fanout) {
      await lease.stop();
      lease.signal.throwIfAborted();
      return { fannedOut: await deps.fanout.launch(image, job, lease.current()) };
    }
    const controller = new AbortController();
    const stopOnLostLease = () => controller.abort(lease.signal.reason);
    lease.signal.addEventListener("abort", stopOnLostLease, { once: true });
    let result: PipelineResult;
    try {
      result = await runPipeline({
        key: stagedKey,
        outputKey: imageKey(image.id),
        spoolKey: spoolKey(image.id),
        size,
        etag: staged.etag,
        versionId: staged.versionId,
        declaredFormat: image.disk_format,
        declaredSha256: image.upload_sha256 !== null,
        osHashAlgo: deps.osHashAlgo,
        policy: deps.policy,
        objects,
        signal: controller.signal,
        onProgress: progressReporter(image, size),
      });
    } finally {
      lease.signal.removeEventListener("abort", stopOnLostLease);
      controller.abort();
    }
    // The last write must name the lease as it stands: no renewal may slip in between.
    await lease.stop();
    lease.signal.throwIfAborted();
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
      bytesCopied: result.storedCopied,
      checks: result.inspection.checks.map((c) => c.name),
    });
    return images.transition(
      image.id,
      "finishImport",
      {
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
        // The upload kept as the image's data, that version of it; otherwise the data is at images/<id>.
        stored_object: result.kept ?? null,
      },
      { leaseIs: lease.current() },
    );
  }

  /**
   * Takes the image, or finds out why not. An image held under a live lease belongs to that importer:
   * when its lease is renewed while we watch, this event is a duplicate. When the lease runs out
   * unrenewed, its importer died and this event takes over.
   */
  async function acquire(
    id: string,
    key: string,
    info: ObjectInfo,
    eventVersion: string | undefined,
  ): Promise<ImageRecord | { killed: ImageRecord } | { ignored: string }> {
    const { size } = info;
    let watched: string | null | undefined;
    // Bounded: each round either takes the image, or sees it move, or waits out part of one lease.
    for (let round = 0; round < MAX_ACQUIRE_ROUNDS; round++) {
      const current = await images.get(id);
      if (!current || !TAKES_UPLOADS.has(current.status)) {
        await discardLate(current, key, eventVersion);
        return { ignored: `image ${id} is ${current?.status ?? "gone"}, not waiting for an upload` };
      }
      const leaseEnd = current.import_lease_until ? Date.parse(current.import_lease_until) : 0;
      const nowMs = clock.now().getTime();
      // Expired means strictly past (the write's condition is `lease < now`).
      if (current.status === "importing" && leaseEnd >= nowMs) {
        if (watched !== undefined && current.import_lease_until !== watched) {
          return { ignored: `image ${id} is being imported by a live importer` };
        }
        watched = current.import_lease_until;
        // Polls often: the holder may be a web-download that gives the image back right after staging.
        await sleep(Math.min(leaseEnd - nowMs + 250, (deps.leaseSeconds * 1000) / 6, WATCH_POLL_MS));
        continue;
      }
      const taken = await begin(current, key, size);
      if (taken) return taken;
    }
    return { ignored: `image ${id} kept changing while this import tried to take it` };
  }

  /**
   * A late or repeated upload for an image that is done (or gone) is garbage: free the storage. Never
   * the version an image keeps at that key as its data: an upload written over it after the import (the
   * client still holds the link) is deleted by its own version, and the image keeps what was verified.
   */
  async function discardLate(current: ImageRecord | undefined, key: string, version: string | undefined) {
    const kept = current ? storedObject(current) : undefined;
    if (kept?.key !== key || kept.version_id === undefined) {
      await objects.delete(key);
      return;
    }
    // The event that imported the image, delivered again: nothing to free.
    if (version === kept.version_id) return;
    if (version !== undefined) await objects.delete(key, version);
    else await objects.deleteOtherVersions(key, kept.version_id);
    log.warn("upload after import discarded", { imageId: current?.id, key, versionId: version ?? null });
  }

  type Lease = ReturnType<typeof heartbeat>;

  /** Imports an image this importer holds, renewing its lease; a failure is settled by `afterFailure`. */
  async function importHeld(image: ImageRecord, key: string, info: ObjectInfo): Promise<ImportOutcome> {
    const { size } = info;
    const id = image.id;
    log.info("import started", { imageId: id, size, takeovers: image.import_takeovers ?? 0 });
    const started = Date.now();
    const lost = new AbortController();
    const lease = heartbeat(id, image.import_lease_until ?? "", (why) =>
      lost.abort(new LeaseLostError(`the import lease of image ${id} was lost`, { cause: why })),
    );
    try {
      // Multipart writes an earlier attempt left here when it crashed: aborted before and after ours.
      await abortLeftoverWrites(objects, id);
      const staged = { key, size, etag: info.etag, versionId: info.versionId };
      const done = await run(image, staged, { signal: lost.signal, ...lease });
      // The execution owns the image, its upload and its output key now.
      if ("fannedOut" in done) return { outcome: "fanned-out", image: done.fannedOut };
      await abortLeftoverWrites(objects, id).catch(() => 0);
      // The staged upload goes, all its versions, except the one the image keeps as its data.
      const kept = done.stored_object;
      if (kept?.key === key && kept.version_id !== undefined)
        await objects.deleteOtherVersions(key, kept.version_id);
      else await objects.delete(key);
      const seconds = (Date.now() - started) / 1000;
      log.info("import finished", {
        imageId: id,
        size: done.size,
        seconds,
        // Upload bytes read per second: what an operator compares across imports and memory sizes.
        uploadMBps: seconds > 0 ? Math.round(size / seconds / 1e6) : null,
      });
      return { outcome: "active", image: done };
    } catch (err) {
      await lease.stop();
      return afterFailure(err, image, key, lease, lost.signal.aborted);
    }
  }

  /**
   * Settles a failed import: a permanent failure kills the image; a lost lease leaves it to whoever holds
   * it now; anything else gives the image back to `queued` and rethrows, so the event is retried.
   */
  async function afterFailure(
    err: unknown,
    image: ImageRecord,
    key: string,
    lease: Lease,
    leaseLost: boolean,
  ): Promise<ImportOutcome> {
    const id = image.id;
    if (isPermanent(err) && !leaseLost) {
      const killed = await unlessStale(kill(image, key, err, lease.current()));
      return killed
        ? { outcome: "killed", image: killed }
        : { outcome: "ignored", why: "image changed while importing" };
    }
    if (leaseLost || err instanceof StaleStatusError) return afterLostLease(err, id, lease);
    await objects.delete(imageKey(id)).catch(() => undefined);
    await images
      .transition(
        id,
        "releaseImport",
        { updated_at: clock.now().toISOString(), import_lease_until: null },
        { leaseIs: lease.current() },
      )
      .catch((e: unknown) => log.warn("could not release image", { imageId: id, error: String(e) }));
    if (err instanceof ObjectChangedError) {
      // The client uploaded again while this import read the first upload: nothing was stored, and the
      // retry (or the new upload's own event) imports the new bytes from their start.
      log.warn("staged upload replaced while importing, will be imported again", { imageId: id });
    } else if (!(err instanceof HangarError))
      log.error("import failed, will be retried", { imageId: id, error: String(err) });
    throw err;
  }

  /** The lease was lost or a conditional write lost: what the record says now decides. */
  async function afterLostLease(err: unknown, id: string, lease: Lease): Promise<ImportOutcome> {
    // The database out of reach: nothing to tell what happened, so let the event be retried.
    const now = await images.get(id).catch(() => {
      throw err;
    });
    if (now?.status === "importing" && now.import_lease_until !== lease.current()) {
      // Taken over: the output key is the new importer's now; leave it and the upload alone.
      log.warn("import lease lost, stopping", { imageId: id });
      return { outcome: "ignored", why: `image ${id} was taken over by another importer` };
    }
    if (now?.status === "importing") {
      // Our lease ran out unrenewed (the database was out of reach) and nobody took over yet: let the
      // event be retried, and the retry take the image over.
      throw err;
    }
    // Deleted (or otherwise changed) while importing: whatever was written is not ours to keep.
    await objects.delete(imageKey(id)).catch(() => undefined);
    return { outcome: "ignored", why: `image ${id} changed while importing` };
  }

  return {
    /**
     * Imports the upload at `key`. `versionId` is the version the storage event names (storage that
     * keeps versions): a late upload is discarded by it. The import itself reads the version `head`
     * finds, the newest.
     */
    async importStagedObject(key: string, versionId?: string): Promise<ImportOutcome> {
      const id = imageIdFromStagingKey(key);
      if (!id) return { outcome: "ignored", why: `not a staging key Hangar generated: ${key}` };
      const info = await objects.head(key);
      if (!info) return { outcome: "ignored", why: `staged object ${key} is gone` };
      const image = await acquire(id, key, info, versionId);
      if ("killed" in image) return { outcome: "killed", image: image.killed };
      if ("ignored" in image) return { outcome: "ignored", why: image.ignored };
      return deps.within
        ? deps.within(image, () => importHeld(image, key, info))
        : importHeld(image, key, info);
    },
  };
}

export type Importer = ReturnType<typeof createImporter>;
