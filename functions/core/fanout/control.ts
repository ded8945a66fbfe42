import { StaleStatusError } from "../errors.ts";
import { type ImageRecord, imageKey } from "../image/image.ts";
import type { ObjectStore } from "../ports.ts";
import type { ChainAlgo } from "./hash-chain.ts";
import { failureOf, held, renew, type StepDeps, type StepError, type StepInput } from "./held.ts";
import { checkDeclaredSha256, type FanoutJob, hashesUpload, uploadSha256 } from "./job.ts";
import { type FanoutRange, planRanges } from "./plan.ts";
import type { FanoutStorage } from "./ports.ts";

export interface ControlDeps extends StepDeps {
  objects: ObjectStore;
  storage: FanoutStorage;
  /** Told how a fanned-out import ended, and how long it took since the importer handed it over. */
  onSettled?: (outcome: { outcome: "active" | "killed"; image: ImageRecord }, ms: number) => void;
}

/** The finish step's input: the stored chain's digests, and the upload chain's when it ran. */
export interface FinishInput extends StepInput {
  digests: Partial<Record<ChainAlgo, string>>;
  /** `{}` when the upload chain did not run; absent from executions started before it existed. */
  uploadDigests?: Partial<Record<ChainAlgo, string>> | undefined;
}

/** The plan step's result, kept at `$.plan` for the rest of the execution. */
export interface PlanOutput {
  /** Bytes of the stored object (the raw output, or the upload when copied): what the chain hashes. */
  virtualSize: number;
  partSize: number;
  rangeBytes: number;
  partsTotal: number;
  ranges: FanoutRange[];
  uploadId: string;
  workers: number;
  /** Bytes of the staged upload: what the upload chain hashes. */
  uploadSize: number;
  /** Whether the upload chain runs (a converted upload whose image declares `upload_sha256`). */
  hashUpload: boolean;
}

/**
 * The fan-out's control steps (the `fanoutControl` function): plan (start the multipart upload, cut the
 * ranges), complete (assemble the parts), finish (check the upload's declared sha256, record the digests,
 * make the image active) and cleanup (abort, delete, kill the image with a reason). Each is safe to run
 * twice.
 */
export function createFanoutControl(deps: ControlDeps) {
  const { images, objects, storage, clock, log } = deps;

  async function plan(input: StepInput): Promise<PlanOutput> {
    const { job } = await held(images, input);
    const key = imageKey(input.imageId);
    // A retried plan (or an earlier execution) may have left an upload here: nothing wrote to it yet.
    await objects.abortUploads(key);
    const uploadId = await storage.create(key);
    try {
      await renew(deps, input, { import_fanout: { ...job, upload_id: uploadId } });
    } catch (err) {
      await storage.abort(key, uploadId).catch(() => undefined);
      throw err;
    }
    const cut = planRanges({
      virtualSize: job.output_size,
      rangeBytes: job.range_bytes,
      partSize: job.part_size,
    });
    log.info("fan-out planned", {
      imageId: input.imageId,
      execution: input.execution,
      ranges: cut.ranges.length,
      parts: cut.partsTotal,
      partSize: cut.partSize,
      mode: job.mode,
    });
    return {
      virtualSize: cut.virtualSize,
      partSize: cut.partSize,
      rangeBytes: cut.rangeBytes,
      partsTotal: cut.partsTotal,
      ranges: [...cut.ranges],
      uploadId,
      workers: Math.max(1, Math.min(job.workers, cut.ranges.length)),
      uploadSize: job.upload_size,
      hashUpload: hashesUpload(job),
    };
  }

  async function complete(input: StepInput & { uploadId: string; partsTotal: number }): Promise<void> {
    const { job } = await held(images, input);
    const key = imageKey(input.imageId);
    const parts = await storage.listParts(key, input.uploadId);
    if (parts === undefined) {
      // Gone: completed by an earlier attempt of this step (its answer was lost), or aborted.
      const stored = await objects.head(key);
      if (stored?.size === job.output_size) return;
      throw new Error(`the multipart upload ${input.uploadId} of ${key} is gone and nothing was stored`);
    }
    const byNumber = new Map(parts.map((p) => [p.partNumber, p]));
    const missing: number[] = [];
    for (let n = 1; n <= input.partsTotal; n++) if (!byNumber.has(n)) missing.push(n);
    if (missing.length > 0 || parts.length !== input.partsTotal) {
      throw new Error(
        `the upload of ${key} has ${parts.length} parts, expected ${input.partsTotal} (missing ${missing.slice(0, 5).join(", ")})`,
      );
    }
    const size = parts.reduce((sum, p) => sum + p.size, 0);
    if (size !== job.output_size) {
      throw new Error(`the parts of ${key} hold ${size} bytes, expected ${job.output_size}`);
    }
    await storage.complete(
      key,
      input.uploadId,
      [...parts].sort((a, b) => a.partNumber - b.partNumber),
    );
    await renew(deps, input);
  }

  async function finish(input: FinishInput): Promise<void> {
    const current = await images.get(input.imageId);
    // A retried finish whose first attempt won: nothing left to do.
    if (current?.status === "active" && current.checksum === input.digests.md5) return;
    const { image, job } = await held(images, input);
    const { digests } = input;
    // The gate: no image becomes active while its declared sha256 is not the upload's, whichever chain read it.
    checkDeclaredSha256(image.upload_sha256, uploadSha256(job, digests, input.uploadDigests));
    const stored = await objects.head(imageKey(input.imageId));
    if (stored?.size !== job.output_size) {
      throw new Error(`the stored image has ${stored?.size ?? "no"} bytes, expected ${job.output_size}`);
    }
    const now = clock.now().toISOString();
    const done = await images.transition(
      input.imageId,
      "finishImport",
      {
        updated_at: now,
        size: job.output_size,
        virtual_size: job.virtual_size,
        disk_format: job.stored_format,
        checksum: digests.md5 ?? null,
        os_hash_algo: job.os_hash_algo,
        os_hash_value: digests[job.os_hash_algo] ?? null,
        source_format: job.source_format,
        converted: job.mode === "convert",
        import_progress: progressAtEnd(image, job, now),
        import_lease_until: null,
        import_execution: null,
        import_fanout: null,
      },
      // The record as read: the execution still holds it, and no takeover slipped in since.
      { leaseIs: image.import_lease_until ?? "" },
    );
    await objects.delete(job.upload_key).catch(() => undefined);
    const seconds = (Date.parse(now) - Date.parse(job.started_at)) / 1000;
    deps.onSettled?.({ outcome: "active", image: done }, seconds * 1000);
    log.info("import finished", {
      imageId: input.imageId,
      execution: input.execution,
      fanout: true,
      size: done.size,
      seconds,
      uploadMBps: seconds > 0 ? Math.round(job.upload_size / seconds / 1e6) : null,
    });
  }

  async function cleanup(input: StepInput & { error?: StepError }): Promise<void> {
    const image = await images.get(input.imageId);
    const job = image?.import_fanout;
    if (!image || image.import_execution !== input.execution || !job) {
      // Not ours (any more): whoever holds the image owns its objects.
      log.warn("fan-out cleanup found the image superseded", {
        imageId: input.imageId,
        execution: input.execution,
        status: image?.status ?? "gone",
      });
      return;
    }
    const key = imageKey(input.imageId);
    if (job.upload_id) await storage.abort(key, job.upload_id);
    await objects.abortUploads(key);
    await objects.delete(key);
    await objects.delete(job.upload_key);
    const failure = failureOf(input.error);
    log.warn("import rejected", {
      imageId: input.imageId,
      execution: input.execution,
      reason: failure.reason,
      detail: failure.message,
      error: input.error?.Error,
    });
    const killed = await killHeld(input, image.import_lease_until, failure);
    if (killed)
      deps.onSettled?.(
        { outcome: "killed", image: killed },
        clock.now().getTime() - Date.parse(job.started_at),
      );
  }

  /**
   * Kills the image while `execution` still holds it. A worker of the failed Map may still renew the
   * lease for a moment: the write is tried again on the record as it then is, while it is still ours.
   */
  async function killHeld(
    input: StepInput,
    lease: string | null,
    failure: { reason: string; message: string },
  ): Promise<ImageRecord | undefined> {
    let leaseIs = lease ?? "";
    for (let attempt = 1; ; attempt++) {
      try {
        return await images.transition(
          input.imageId,
          "failImport",
          {
            updated_at: clock.now().toISOString(),
            failure,
            import_lease_until: null,
            import_execution: null,
            import_fanout: null,
          },
          { leaseIs },
        );
      } catch (err) {
        if (!(err instanceof StaleStatusError) || attempt >= 5) throw err;
        const now = await images.get(input.imageId);
        if (now?.status !== "importing" || now.import_execution !== input.execution) return undefined;
        leaseIs = now.import_lease_until ?? "";
      }
    }
  }

  return { plan, complete, finish, cleanup };
}

function progressAtEnd(image: ImageRecord, job: FanoutJob, now: string) {
  const p = image.import_progress;
  return {
    bytes_read: p?.total ?? 0,
    total: p?.total ?? 0,
    updated_at: now,
    workers: p?.workers ?? 0,
    ranges_done: p?.ranges_done ?? 0,
    ranges_total: p?.ranges_total ?? 0,
    bytes_hashed: job.output_size,
    ...(hashesUpload(job) ? { upload_bytes_hashed: job.upload_size } : {}),
  };
}

export type FanoutControl = ReturnType<typeof createFanoutControl>;
