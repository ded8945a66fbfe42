/**
 * Inspection before upload: the importer's own inspector (functions/core/formats), reading the chosen
 * file through `File.slice` — its head, the regions its headers point at, and its tail — so an unsafe
 * image is refused, with the name of the check it failed, before a byte of it is sent.
 */
import { CHECK } from "../../functions/core/formats/checks.ts";
import { UnsafeImageError, UnsupportedFormatError } from "../../functions/core/formats/errors.ts";
import { inspectRanges } from "../../functions/core/formats/ranges.ts";
import type { InspectionResult, RangeReader } from "../../functions/core/formats/types.ts";

/** The operator's limits, from `GET /v2/info/import`. */
export interface InspectLimits {
  maxVirtualSize: number;
  maxGzipRatio: number;
}

export type Verdict =
  | { ok: true; result: InspectionResult; bytesRead: number }
  | { ok: false; check: string; reason: string; message: string };

/** A `File` as the inspector's random-access reader. */
export function fileReader(file: Blob): RangeReader {
  return {
    size: file.size,
    async read(offset, length) {
      return new Uint8Array(await file.slice(offset, offset + length).arrayBuffer());
    },
  };
}

/**
 * Inspects `file` and, when the user named a disk format, checks that the file is in it. Never throws
 * for an image it refuses: the verdict names the check and says why.
 */
export async function inspectFile(
  file: Blob,
  limits: InspectLimits,
  declaredFormat?: string,
): Promise<Verdict> {
  let run: { result: InspectionResult; bytesRead: number };
  try {
    run = await inspectRanges(fileReader(file), limits);
  } catch (error) {
    if (error instanceof UnsafeImageError) {
      return { ok: false, check: error.check, reason: error.reason, message: error.message };
    }
    if (error instanceof UnsupportedFormatError) {
      return { ok: false, check: "supported format", reason: error.reason, message: error.message };
    }
    const message = error instanceof Error ? error.message : String(error);
    return { ok: false, check: CHECK.malformedHeader, reason: "UNSAFE_IMAGE", message };
  }
  if (declaredFormat && declaredFormat !== run.result.format) {
    return {
      ok: false,
      check: "disk format",
      reason: "FORMAT_MISMATCH",
      message: `the file is ${run.result.format}, not ${declaredFormat} as chosen`,
    };
  }
  return { ok: true, ...run };
}
