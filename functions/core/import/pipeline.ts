import { HangarError, ImportRejectedError } from "../errors.ts";
import type { DetectionResult, InspectionResult } from "../formats/index.ts";
import type { StoredObject } from "../image/image.ts";
import type { ObjectStore } from "../ports.ts";
import type { DigestName, DigestValues } from "./digests.ts";
import { type ImportPlan, type ImportPolicy, planImport } from "./plan.ts";
import { detectObject, execute, type ImportContext, type SourceObject, type Step } from "./strategies.ts";
import { UploadRead } from "./upload-read.ts";

export type { ImportPolicy } from "./plan.ts";

/** Plans in one import at most: the first, its fallback (spool first), and the spool's own plan. */
const MAX_STEPS = 3;

export interface PipelineResult {
  detected: DetectionResult;
  inspection: InspectionResult;
  storedFormat: string;
  converted: boolean;
  storedSize: number;
  /** Bytes of the stored data that storage copied inside itself (zeros, runs of the upload) rather than received. */
  storedCopied: number;
  /** Digests of the stored bytes (md5, os_hash_algo). */
  stored: DigestValues;
  /** The gzip-wrapped image was not stored in order: unwrapped into the spool object first. */
  spooled: boolean;
  /** Digests of the uploaded bytes (sha256 when the client declared one). */
  upload: DigestValues;
  uploadBytes: number;
  /** The stored data is the upload itself, this version of it (nothing was written). */
  kept?: StoredObject;
}

export interface PipelineInput {
  key: string;
  outputKey: string;
  /** Scratch object for a gzip-wrapped upload whose image is not stored in order; deleted after. */
  spoolKey: string;
  size: number;
  /** The upload's ETag when `size` was taken: the read and a copy of the upload require it. */
  etag?: string | undefined;
  /**
   * The upload's version when `size` was taken (storage keeps versions): every read names it, so the
   * bytes checked are that version's whatever is written to the key meanwhile, and an upload in an
   * accepted format is kept as that version instead of copied.
   */
  versionId?: string | undefined;
  declaredFormat: string | null;
  declaredSha256: boolean;
  osHashAlgo: DigestName;
  policy: ImportPolicy;
  objects: ObjectStore;
  signal: AbortSignal;
  onProgress: (bytesRead: number) => void;
}

/** zlib's own errors (truncated or corrupt deflate data) say the upload is broken, not the network. */
const isZlibError = (err: unknown): err is Error & { code: string } =>
  err instanceof Error && String((err as unknown as { code?: unknown }).code ?? "").startsWith("Z_");

const isPermanentRefusal = (err: unknown) =>
  err instanceof HangarError && (err.reason === "UNSUPPORTED_FORMAT" || err.reason === "UNSAFE_IMAGE");

const refusal = (plan: ImportPlan & { kind: "refuse" }) => new ImportRejectedError(plan.reason, plan.message);

/**
 * Detects the upload's format from its two ends and plans its import (`planImport`), then carries the
 * plan out (`execute`) in one read of the staged object that hashes it, inspects it, and stores it as it
 * is or unwrapped or converted, hashing what is stored. A strategy may hand over to another plan (the
 * spool's, or a fallback that reads the upload again). Throws `ImportRejectedError` (and the formats'
 * typed errors) for permanent failures.
 */
export async function runPipeline(input: PipelineInput): Promise<PipelineResult> {
  const { objects, key, size, signal } = input;
  const upload: SourceObject = { key, size, isUpload: true, versionId: input.versionId };
  const detected = await detectObject(objects, upload, signal);
  const wrapped = detected.compression === "gzip";
  const plan = planImport({ detected, wrapped, declaredFormat: input.declaredFormat, policy: input.policy });
  // Refused by what the ends say alone: nothing is read.
  if (plan.kind === "refuse" && !plan.inspectFirst) throw refusal(plan);
  const ctx: ImportContext = {
    objects,
    outputKey: input.outputKey,
    spoolKey: input.spoolKey,
    uploadSize: size,
    uploadEtag: input.etag,
    declaredFormat: input.declaredFormat,
    policy: input.policy,
    signal,
  };
  const transformed = plan.kind !== "pass-through";
  const openRead = () =>
    new UploadRead({
      objects,
      key,
      size,
      policy: input.policy,
      signal,
      onProgress: input.onProgress,
      storedNames: ["md5", input.osHashAlgo],
      uploadNames: input.declaredSha256 ? ["sha256"] : [],
      transformed,
      ifMatch: input.etag,
      versionId: input.versionId,
    });
  let read = openRead();
  let step: Step = { plan, detected, object: upload };
  let spooled = false;
  try {
    for (let n = 1; ; n++) {
      spooled ||= step.plan.kind === "spool-first";
      const outcome = await execute(ctx, step, read);
      if ("written" in outcome) {
        const { storedFormat, written, kept } = outcome;
        const checked = await finish(read, step.detected);
        const result = {
          ...checked,
          storedFormat,
          storedSize: written.size,
          storedCopied: written.copied ?? 0,
          converted: transformed,
          spooled,
        };
        return kept ? { ...result, kept } : result;
      }
      if (n === MAX_STEPS) throw new Error(`import plan ${outcome.next.plan.kind} after ${n} plans`);
      if (outcome.readAgain) {
        await read.close();
        read = openRead();
      }
      step = outcome.next;
    }
  } catch (caught) {
    throw await failure(caught, step.plan, read);
  } finally {
    if (spooled) await objects.delete(input.spoolKey).catch(() => undefined);
  }
}

/** Reads the rest of the upload, checks it, and gives the result's inspection and digests. */
async function finish(read: UploadRead, detected: DetectionResult) {
  const inspection = await read.inspected(detected);
  const { stored, upload } = await read.digests();
  return { detected, inspection, stored, upload, uploadBytes: read.read.bytes };
}

/** The error an import that failed under `plan` ends with; the read is closed. */
async function failure(caught: unknown, plan: ImportPlan, read: UploadRead): Promise<unknown> {
  const err = isZlibError(caught)
    ? new ImportRejectedError(
        "UNSAFE_IMAGE",
        `malformed header: the gzip stream is invalid (${caught.message})`,
        {
          cause: caught,
        },
      )
    : caught;
  // A converter refuses what it cannot map (a backing file, say) before the inspector has seen the
  // tail it needs for a verdict. The inspector's named check is the better reason: read the rest
  // (no conversion, no writes) and let it speak.
  const verdict = plan.converts && isPermanentRefusal(err) ? await read.verdict() : undefined;
  await read.close();
  return verdict ?? err;
}
