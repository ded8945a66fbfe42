/**
 * Ports the converters read through. `RangeReader` has the same shape as the inspector's port in
 * `functions/core/formats/types.ts`; once that module exists this file re-exports it instead.
 */

/** Random access to the staged object (a ranged GET in S3, `pread` on a file). */
export interface RangeReader {
  /** Object size in bytes. */
  readonly size: number;
  /** Reads exactly `length` bytes at `offset` (callers never ask past `size`). */
  read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array>;
}

/** One sequential read of the whole object, from its first byte (a plain GET). */
export interface SequentialSource {
  stream(signal?: AbortSignal): AsyncIterable<Uint8Array>;
}

/** Where a converter reads its input. `range` is absent only for sources that cannot seek (gzip). */
export interface ConvertSource {
  range?: RangeReader;
  sequential?: SequentialSource;
  /** Size of the object behind `sequential` when there is no `range` (unknown for gzip: omit). */
  size?: number;
}

export type SourceFormat = "raw" | "qcow2" | "vmdk" | "vhd" | "vhdx" | "vdi";
