import { openDiskMap, type RangeReader, SOURCE_FORMATS, type SourceFormat } from "../convert/index.ts";
import { ImportRejectedError } from "../errors.ts";
import { type DetectionResult, inspectRanges } from "../formats/index.ts";
import type { ImageRecord } from "../image/image.ts";
import { type ImportPolicy, planImport } from "../import/plan.ts";
import { detectObject } from "../import/strategies.ts";
import type { Clock, ImageRepository, Logger, ObjectStore } from "../ports.ts";
import type { ChainAlgo } from "./hash-chain.ts";
import { executionName, type FanoutJob, hashesUpload } from "./job.ts";
import { FanoutPlanError, planRanges, shouldFanOut } from "./plan.ts";
import type { FanoutStarter, FanoutStorage } from "./ports.ts";
import { uploadReader } from "./worker.ts";

/** The operator's fan-out settings (functions/config.ts). */
export interface FanoutSettings {
  /** Virtual size (bytes) above which an import fans out. */
  threshold: number;
  rangeBytes: number;
  partSize: number;
  workers: number;
  hashLinkBytes: number;
}

export interface FanoutSwitchDeps {
  images: ImageRepository;
  objects: ObjectStore;
  storage: FanoutStorage;
  starter: FanoutStarter;
  clock: Clock;
  log: Logger;
  policy: ImportPolicy;
  osHashAlgo: "sha256" | "sha384" | "sha512";
  settings: FanoutSettings;
}

/** The staged upload as the importer holds it. */
export interface StagedUpload {
  key: string;
  size: number;
  etag: string | undefined;
}

/**
 * The importer's switch to the fan-out (docs/scale.md). `consider` decides, from ranged reads only: an
 * upload whose virtual size is above the threshold is inspected with every check the single-invocation
 * import makes (the same inspector, fed the head, the tables and the tail), planned as that import would
 * plan it, and fanned out; one that fails a check is refused with the same reason. Uploads it cannot
 * read by range (gzip-wrapped) stay with the single invocation. `launch` records the job and starts the
 * execution.
 */
export function createFanoutSwitch(deps: FanoutSwitchDeps) {
  const { settings, log } = deps;

  /** The image's virtual size from its header and tables; undefined when they do not read as its format. */
  async function virtualSizeOf(from: SourceFormat, reader: RangeReader, signal: AbortSignal) {
    if (from === "raw") return reader.size;
    try {
      return (await openDiskMap(from, reader, signal)).virtualSize;
    } catch {
      // The single import refuses it with its usual reason.
      return undefined;
    }
  }

  /** Every check of the single import, on ranged reads: its refusal is the image's reason. */
  async function check(
    image: ImageRecord,
    detected: DetectionResult,
    reader: RangeReader,
    signal: AbortSignal,
  ) {
    const { result: inspection } = await inspectRanges(reader, {
      maxVirtualSize: deps.policy.maxVirtualSize,
      maxGzipRatio: deps.policy.maxGzipRatio,
      signal,
    });
    if (inspection.format !== detected.format) {
      throw new ImportRejectedError(
        "UNSAFE_IMAGE",
        `The upload looked like ${detected.format} at its ends but inspects as ${inspection.format}.`,
      );
    }
    const plan = planImport({
      detected,
      wrapped: false,
      declaredFormat: image.disk_format,
      policy: deps.policy,
    });
    if (plan.kind === "refuse") throw new ImportRejectedError(plan.reason, plan.message);
    if (plan.kind === "convert" && plan.to !== "raw") {
      log.warn("fan-out stores raw: the preferred format is not applied to images this large", {
        imageId: image.id,
        preferredFormat: plan.to,
      });
    }
    return { inspection, copy: plan.kind === "pass-through" };
  }

  /** An output the plan cannot cut (past S3's largest object) is refused before anything is written. */
  function checkPlan(outputSize: number): void {
    try {
      planRanges({ virtualSize: outputSize, rangeBytes: settings.rangeBytes, partSize: settings.partSize });
    } catch (err) {
      if (!(err instanceof FanoutPlanError)) throw err;
      throw new ImportRejectedError("FANOUT_FAILED", `The image cannot be stored: ${err.message}.`);
    }
  }

  async function consider(
    image: ImageRecord,
    staged: StagedUpload,
    signal: AbortSignal,
  ): Promise<FanoutJob | undefined> {
    const detected = await detectObject(deps.objects, { ...staged, isUpload: true }, signal);
    // Every format the converter reads, a worker converts by range.
    const from = SOURCE_FORMATS[detected.format];
    if (detected.compression !== "none" || from === undefined) return undefined;
    const reader = uploadReader(
      deps.storage,
      { upload_key: staged.key, upload_size: staged.size, upload_etag: staged.etag ?? null },
      signal,
    );
    const virtualSize = await virtualSizeOf(from, reader, signal);
    if (virtualSize === undefined || !shouldFanOut(virtualSize, settings.threshold)) return undefined;
    const { inspection, copy } = await check(image, detected, reader, signal);
    const outputSize = copy ? staged.size : inspection.virtualSize;
    checkPlan(outputSize);
    const algos: ChainAlgo[] = ["md5", deps.osHashAlgo];
    const declared = image.upload_sha256 !== null;
    // A declared sha256 is of the upload's bytes: the stored chain reads them only when they are stored as
    // they are; a converted upload gets a chain of its own.
    if (copy && declared && !algos.includes("sha256")) algos.push("sha256");
    const uploadAlgos: ChainAlgo[] = !copy && declared ? ["sha256"] : [];
    return {
      upload_key: staged.key,
      upload_etag: staged.etag ?? null,
      upload_size: staged.size,
      mode: copy ? "copy" : "convert",
      source_format: detected.format,
      convert_from: copy ? null : from,
      stored_format: copy ? detected.format : "raw",
      output_size: outputSize,
      virtual_size: inspection.virtualSize,
      part_size: settings.partSize,
      range_bytes: settings.rangeBytes,
      workers: settings.workers,
      hash_link_bytes: settings.hashLinkBytes,
      algos,
      upload_algos: uploadAlgos,
      os_hash_algo: deps.osHashAlgo,
      upload_id: null,
      started_at: deps.clock.now().toISOString(),
    };
  }

  /**
   * Records `job` on the image the importer holds under `lease` (the lease itself unchanged: the
   * execution's first step renews it) and starts the execution. A start that fails takes the record
   * back, and the error is thrown for the importer to give the image back.
   */
  async function launch(image: ImageRecord, job: FanoutJob, lease: string): Promise<ImageRecord> {
    const now = deps.clock.now();
    const name = executionName(image.id, now);
    const cut = planRanges({
      virtualSize: job.output_size,
      rangeBytes: job.range_bytes,
      partSize: job.part_size,
    });
    const recorded = await deps.images.update(
      image.id,
      {
        updated_at: now.toISOString(),
        // What the upload is, shown while it imports (and in the importer's `import result` line).
        source_format: job.source_format,
        import_execution: name,
        import_fanout: job,
        import_progress: {
          bytes_read: 0,
          total: job.upload_size,
          updated_at: now.toISOString(),
          workers: Math.max(1, Math.min(job.workers, cut.ranges.length)),
          ranges_done: 0,
          ranges_total: cut.ranges.length,
          bytes_hashed: 0,
          ...(hashesUpload(job) ? { upload_bytes_hashed: 0 } : {}),
        },
      },
      ["importing"],
      { unchanged: { import_lease_until: lease } },
    );
    try {
      await deps.starter.start(name, { imageId: image.id });
    } catch (err) {
      await deps.images
        .update(image.id, { import_execution: null, import_fanout: null }, ["importing"], {
          unchanged: { import_execution: name },
        })
        .catch((e: unknown) => log.warn("fan-out not taken back", { imageId: image.id, error: String(e) }));
      throw err;
    }
    log.info("import fanned out", {
      imageId: image.id,
      execution: name,
      mode: job.mode,
      sourceFormat: job.source_format,
      storedFormat: job.stored_format,
      virtualSize: job.virtual_size,
      ranges: cut.ranges.length,
      partSize: cut.partSize,
      uploadChain: hashesUpload(job),
    });
    return recorded;
  }

  return { consider, launch };
}

export type FanoutSwitch = ReturnType<typeof createFanoutSwitch>;
