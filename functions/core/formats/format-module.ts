import type { StreamLayer } from "./capture.ts";
import type { CheckResult, FormatName, PartitionTable } from "./types.ts";

/**
 * Probes look at no more than this much of the head and tail, so that `detectFormat` (given the
 * first 64 KiB and the last 512 bytes of an object) and the streaming inspector always agree.
 */
export const PROBE_HEAD_BYTES = 64 * 1024;
export const PROBE_TAIL_BYTES = 512;

/** What a format module says about a stream it matched, once the stream has ended. */
export interface FormatReport {
  virtualSize: bigint;
  subformat?: string;
  partitionTable?: PartitionTable;
  /** The format's own safety checks, passed or failed. */
  checks: CheckResult[];
}

/** Per-stream state of one format module. */
export interface FormatSession {
  /** Called after every chunk; may request regions once a header says where to look. */
  advance(): void;
  /** Called once the stream has ended and this format matched; may throw `MalformedImageError`. */
  report(): FormatReport;
}

/** One disk format: a cheap magic probe and a streaming session. */
export interface FormatModule {
  readonly name: FormatName;
  /** Magic test on at most the first `PROBE_HEAD_BYTES` and the last `PROBE_TAIL_BYTES` bytes. */
  probe(head: Uint8Array, tail: Uint8Array, size: number): boolean;
  /** Subformat when the probe window alone tells it (used by `detectFormat`). */
  subformatFromProbe?(head: Uint8Array, tail: Uint8Array, size: number): string | undefined;
  open(layer: StreamLayer): FormatSession;
}

/** A format recognised only to be refused (QEMU would otherwise probe it). */
export interface UnsupportedFormat {
  readonly name: string;
  probe(head: Uint8Array, tail: Uint8Array, size: number): boolean;
}
