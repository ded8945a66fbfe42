export type { DiskMap, Extent } from "./disk-map.ts";
export {
  CorruptImageError,
  NeedsRangedReads,
  NonMonotonicSource,
  UnsupportedImageError,
} from "./errors.ts";
export { gunzipSource } from "./gzip.ts";
export { openDiskMap } from "./open.ts";
export type { ConvertSource, RangeReader, SequentialSource, SourceFormat } from "./ports.ts";
export { SOURCE_FORMATS } from "./ports.ts";
export { convertRangeToRaw, type GuestRange, rawOutputSize } from "./range.ts";
export { storedAt } from "./stored.ts";
export { convertToQcow2, planQcow2Layout, type Qcow2Layout } from "./to-qcow2.ts";
export { type ConvertOptions, convertToRaw } from "./to-raw.ts";
