import type { SourceFormat } from "../convert/ports.ts";
import { ImportRejectedError } from "../errors.ts";
import type { ChainAlgo } from "./hash-chain.ts";

/**
 * What the importer decided for a fanned-out import, kept on the image record (`import_fanout`) for the
 * execution's steps to read: every step reads the record, and works only while `import_execution` still
 * names its execution. Pure data, JSON as stored.
 */
export interface FanoutJob {
  /** The staged upload every range reads, and the ETag it had when inspected (reads require it). */
  upload_key: string;
  upload_etag: string | null;
  upload_size: number;
  /**
   * `convert`: a worker converts each range to raw with ranged reads of the upload. `copy`: the upload
   * is stored as it is (an accepted format), its parts copied by storage (UploadPartCopy).
   */
  mode: "convert" | "copy";
  /** The format the upload was detected as (`source_format`), and the one read by the converter. */
  source_format: string;
  convert_from: SourceFormat | null;
  /** The format stored (`disk_format`): raw when converting, the upload's when copying. */
  stored_format: string;
  /** Bytes of the stored object (the raw output, or the upload when copied). */
  output_size: number;
  virtual_size: number;
  part_size: number;
  range_bytes: number;
  /** Ranges converted at once (the Map's MaxConcurrency). */
  workers: number;
  /** Bytes one hash link reads. */
  hash_link_bytes: number;
  /**
   * The stored-object chain's algorithms: md5, `os_hash_algo`, and sha256 when the upload is stored as it
   * is (copy) and declares `upload_sha256`: the stored bytes are then the upload's.
   */
  algos: ChainAlgo[];
  /**
   * The upload chain's algorithms: `["sha256"]` when a converted upload declares `upload_sha256` (the
   * declared digest is of the upload's bytes, which the stored chain never reads), else none and no
   * upload chain runs. Absent on jobs recorded before the upload chain existed.
   */
  upload_algos?: ChainAlgo[];
  os_hash_algo: "sha256" | "sha384" | "sha512";
  /** The multipart upload of the stored image, once the plan step started it. */
  upload_id: string | null;
  started_at: string;
}

/** The execution's name for an image: unique per start (Step Functions keeps names for 90 days). */
export function executionName(imageId: string, now: Date): string {
  return `${imageId}-${now.getTime().toString(36)}`;
}

/** The progress fields a fan-out adds to `import_progress`. */
export interface FanoutProgress {
  workers: number;
  ranges_done: number;
  ranges_total: number;
  bytes_hashed: number;
  /** Bytes of the upload its own chain has read; only while a converted upload's sha256 is checked. */
  upload_bytes_hashed?: number;
}

/** Whether the execution runs the upload chain (`upload_algos` names an algorithm). */
export const hashesUpload = (job: FanoutJob): boolean => (job.upload_algos ?? []).length > 0;

/**
 * The sha256 of the upload as the fan-out computed it: the stored chain's when the upload was stored as
 * it is, the upload chain's when it was converted; undefined when neither computed it.
 */
export function uploadSha256(
  job: FanoutJob,
  stored: Partial<Record<ChainAlgo, string>>,
  upload: Partial<Record<ChainAlgo, string>> | undefined,
): string | undefined {
  return job.mode === "copy" ? stored.sha256 : upload?.sha256;
}

/**
 * Refuses an import whose upload does not have the sha256 its image declared, with the reason and
 * message the single-invocation import gives (`DIGEST_MISMATCH`).
 */
export function checkDeclaredSha256(declared: string | null, actual: string | undefined): void {
  if (declared !== null && actual !== declared) {
    throw new ImportRejectedError(
      "DIGEST_MISMATCH",
      `The upload's sha256 is ${actual} but the image declared upload_sha256 ${declared}.`,
    );
  }
}
