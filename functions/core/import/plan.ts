/**
 * The import planner: from what the two ends of an object say, the declared format and the operator's
 * policy, which way the upload is stored. Pure: no reads, no writes; `strategies.ts` carries out a plan.
 */
import type { SourceFormat } from "../convert/index.ts";
import type { ImportFailureReason } from "../errors.ts";
import type { DetectionResult } from "../formats/index.ts";
import { RAW_ALIASES } from "../image/format-names.ts";

/** The operator's choices the importer follows (shown by `/v2/info/import`). */
export interface ImportPolicy {
  preferredFormat: string;
  acceptedFormats: readonly string[];
  maxVirtualSize: number;
  maxGzipRatio: number;
}

/** Formats Hangar can write. */
export type TargetFormat = "raw" | "qcow2";

/**
 * How an import goes. Every plan but `refuse` reads the upload once from its start; `converts` says
 * whether the stored bytes are another format than the image's (a converter runs, or may run after the
 * spool).
 */
export type ImportPlan =
  /** Stored as it is: the bytes read are the bytes written. */
  | { kind: "pass-through"; format: string; converts: false }
  /** Converted as it is read, with ranged reads of the same object for what the converter needs out of order. */
  | { kind: "convert"; from: SourceFormat; to: TargetFormat; converts: true }
  /** Stored gunzipped, as it is read; the unwrapped end is checked before the write completes. */
  | { kind: "unwrap"; format: string; converts: false }
  /** Gunzipped and converted as it is read, forward only. */
  | { kind: "unwrap-convert"; from: SourceFormat; to: TargetFormat; converts: true }
  /** Gunzipped into a scratch object first; what that object's two ends say is planned again. */
  | { kind: "spool-first"; converts: boolean }
  /** Not stored. With `inspectFirst` the inspector reads the whole upload first: its refusal is the better reason. */
  | { kind: "refuse"; reason: ImportFailureReason; message: string; inspectFirst: boolean; converts: false };

export type PlanKind = ImportPlan["kind"];

export interface PlanInput {
  /** What the object's two ends say (for a spool: the unwrapped bytes, `compression` still the upload's). */
  detected: DetectionResult;
  /** The object is gzip-wrapped: only its unwrapped start is known, not its unwrapped end. */
  wrapped: boolean;
  declaredFormat: string | null;
  policy: ImportPolicy;
}

/** Declared formats that name a raw byte image under another name. */
const RAW_NAMES = new Set<string>(["raw", ...RAW_ALIASES]);
const TARGETS = new Set<string>(["raw", "qcow2"] satisfies TargetFormat[]);

/** The declared `disk_format` names the detected format. */
export function declaredMatches(declared: string, detected: string): boolean {
  if (declared === detected) return true;
  // An ISO is a raw byte image; Glance's own clients label ISOs either way.
  return RAW_NAMES.has(declared) && (detected === "raw" || detected === "iso");
}

const refuse = (reason: ImportFailureReason, message: string, inspectFirst: boolean): ImportPlan => ({
  kind: "refuse",
  reason,
  message,
  inspectFirst,
  converts: false,
});

/** Plans the import of an object whose two ends say `detected`. */
export function planImport({ detected, wrapped, declaredFormat, policy }: PlanInput): ImportPlan {
  const { format } = detected;
  const converts = !policy.acceptedFormats.includes(format);
  // Inside gzip only the image's start can be seen, and a fixed vhd keeps its footer at the end: an
  // image that starts like raw is known only once it is unwrapped.
  const endUnseen = wrapped && format === "raw";
  if (declaredFormat !== null && !declaredMatches(declaredFormat, format)) {
    if (endUnseen) return { kind: "spool-first", converts };
    const gzip = detected.compression === "gzip" ? " (gzip-compressed)" : "";
    return refuse(
      "FORMAT_MISMATCH",
      `The image declares disk_format ${declaredFormat} but the upload is ${format}${gzip}.`,
      false,
    );
  }
  if (format === "luks") {
    return refuse(
      "UNSUPPORTED_FORMAT",
      "The upload is a luks-encrypted volume; Hangar stores disk images only.",
      true,
    );
  }
  if (!converts)
    return wrapped ? { kind: "unwrap", format, converts } : { kind: "pass-through", format, converts };
  const to = policy.preferredFormat;
  // A gzip stream cannot seek: conversion to qcow2 reads its source twice, and an image that starts
  // like raw may be another format at its end.
  if (wrapped && (to === "qcow2" || endUnseen)) return { kind: "spool-first", converts };
  if (!TARGETS.has(to)) {
    return refuse(
      "UNSUPPORTED_FORMAT",
      `The operator prefers ${to}, which Hangar cannot convert to; ask them to prefer raw or qcow2.`,
      true,
    );
  }
  const from = (format === "iso" ? "raw" : format) as SourceFormat;
  return wrapped
    ? { kind: "unwrap-convert", from, to: to as TargetFormat, converts }
    : { kind: "convert", from, to: to as TargetFormat, converts };
}

/**
 * The plan that follows `plan` when its forward-only read cannot give what the image needs (bytes out of
 * order, a footer at the end, an unwrapped end that says another format): the upload is read again from
 * its start and unwrapped into the spool.
 */
export function fallbackFor(plan: ImportPlan): ImportPlan | undefined {
  return plan.kind === "unwrap" || plan.kind === "unwrap-convert"
    ? { kind: "spool-first", converts: plan.converts }
    : undefined;
}
