/** Public surface of the disk-format inspector (see docs/safety.md for the checks). */
export { HEAD_BYTES, MAX_CAPTURE_BYTES, TAIL_BYTES } from "./capture.ts";
export { CHECK, type CheckName } from "./checks.ts";
export { detectFormat } from "./detect.ts";
export { MalformedImageError, UnsafeImageError, UnsupportedFormatError } from "./errors.ts";
export { PROBE_HEAD_BYTES, PROBE_TAIL_BYTES } from "./format-module.ts";
export { createInspector, type Inspector } from "./inspector.ts";
export { inspectRanges, type RangeInspection } from "./ranges.ts";
export type {
  CheckResult,
  Compression,
  DetectionResult,
  FormatName,
  InspectionResult,
  InspectOptions,
  PartitionTable,
  RangeReader,
} from "./types.ts";
export { FORMAT_NAMES } from "./types.ts";
