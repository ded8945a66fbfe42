/**
 * Public shapes of the disk-format inspector. Everything here is pure data: the inspector runs in
 * the importer Lambda and in unit tests alike, with no I/O of its own.
 */

/** Formats the inspector identifies and lets through to the safety checks. */
export const FORMAT_NAMES = ["raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "luks"] as const;
export type FormatName = (typeof FORMAT_NAMES)[number];

export type Compression = "none" | "gzip";

export type PartitionTable = "mbr" | "gpt";

/** Operator limits and the size of the object being inspected. */
export interface InspectOptions {
  /** Size in bytes of the object the chunks come from (the staged object, compressed if gzip). */
  totalSize: number;
  /** Largest virtual size (bytes) accepted; larger images fail the `virtual size` check. */
  maxVirtualSize: number;
  /** Largest accepted ratio of inflated bytes to `totalSize` for gzip uploads (`gzip bomb` check). */
  maxGzipRatio: number;
  /** Aborts inflation and makes `update`/`finish` reject with the signal's reason. */
  signal?: AbortSignal;
}

/** One named safety check and its outcome. */
export interface CheckResult {
  name: string;
  passed: boolean;
  detail?: string;
}

export interface InspectionResult {
  format: FormatName;
  compression: Compression;
  /** Bytes, as `qemu-img info` reports it (for vhd: as `qemu-img info -f vpc` does). */
  virtualSize: number;
  /** vmdk createType, vhd/vhdx "fixed" | "dynamic" | "differencing", qcow2 "v2" | "v3", luks "luks1" | "luks2". */
  subformat?: string;
  /** Partition table found at the start of a raw disk or hybrid ISO. */
  partitionTable?: PartitionTable;
  /** Every named check that ran, in the order it ran. */
  checks: CheckResult[];
}

/** What `detectFormat` can tell from the first and last bytes of an object. */
export interface DetectionResult {
  format: FormatName;
  compression: Compression;
  subformat?: string;
}

/** Random access to an object (a ranged GET in S3, `pread` on a file). The converters read through it. */
export interface RangeReader {
  /** Object size in bytes. */
  readonly size: number;
  /**
   * Reads exactly `length` bytes at `offset` (callers never ask past `size`). A reader may fill `into`
   * (exactly `length` bytes long) and return it, saving an allocation; it may also ignore it.
   */
  read(offset: number, length: number, signal?: AbortSignal, into?: Uint8Array): Promise<Uint8Array>;
}
