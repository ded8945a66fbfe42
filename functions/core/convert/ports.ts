/** Ports the converters read through. `RangeReader` is the inspector's port, shared. */
import type { RangeReader } from "../formats/types.ts";

export type { RangeReader };

/**
 * One sequential read of the whole object, from its first byte (a plain GET). With `release`, its chunks
 * may be lent: each stays as it is until given back, and a reader keeps none it has given back.
 */
export interface SequentialSource {
  stream(signal?: AbortSignal): AsyncIterable<Uint8Array>;
  release?(chunk: Uint8Array): void;
}

/** Where a converter reads its input. `range` is absent only for sources that cannot seek (gzip). */
export interface ConvertSource {
  range?: RangeReader;
  sequential?: SequentialSource;
  /** Size of the object behind `sequential` when there is no `range` (unknown for gzip: omit). */
  size?: number;
}

export type SourceFormat = "raw" | "qcow2" | "vmdk" | "vhd" | "vhdx" | "vdi";

/** The converter's reader for each disk format it reads, by Glance's `disk_format` name (an ISO is a raw byte image). */
export const SOURCE_FORMATS: Readonly<Partial<Record<string, SourceFormat>>> = {
  raw: "raw",
  iso: "raw",
  qcow2: "qcow2",
  vmdk: "vmdk",
  vhd: "vhd",
  vhdx: "vhdx",
  vdi: "vdi",
};
