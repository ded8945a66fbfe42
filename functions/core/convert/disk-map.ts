import type { SourceFormat } from "./ports.ts";

/**
 * One run of guest bytes. Extents are yielded in guest order and tile `[0, virtualSize)`:
 * - `zero`: unallocated or known-zero; generated, never read;
 * - `data`: stored verbatim at `host`;
 * - `encoded`: `hostLength` stored bytes at `host` (an upper bound is fine: decoders stop at the end of
 *   their stream) that `decode` turns into exactly `length` guest bytes (compressed clusters, VHD blocks
 *   with a partial sector bitmap, VMDK stream grains).
 */
export type Extent =
  | { readonly kind: "zero"; readonly length: number }
  | { readonly kind: "data"; readonly length: number; readonly host: number }
  | {
      readonly kind: "encoded";
      readonly length: number;
      readonly host: number;
      readonly hostLength: number;
      /** May run asynchronously (zlib on libuv's pool): the engine decodes several at once. */
      readonly decode: (stored: Uint8Array) => Uint8Array | Promise<Uint8Array>;
    };

/** A source image as a map from guest offsets to host bytes. One implementation per format. */
export interface DiskMap {
  readonly format: SourceFormat;
  readonly virtualSize: number;
  /**
   * Where the map can start a walk: when set, `batches(signal, from, to)` starts at the largest
   * multiple of `seekUnit` at or below `from` (the guest bytes one second-level table or one block
   * covers) and reads no table before it; it may end at the first multiple at or above `to`, reading
   * its top-level table only for that span. When absent, `from` and `to` are ignored and the walk
   * covers the whole disk.
   */
  readonly seekUnit?: number;
  /**
   * Extents in guest order, in batches: one batch per metadata table read (an L2 table, a grain table,
   * a stretch of BAT). Reading the next batch may read metadata, so a forward-only source must have
   * issued the reads for the previous batch first. `from`, `to`: see `seekUnit`.
   */
  batches(signal?: AbortSignal, from?: number, to?: number): AsyncIterable<readonly Extent[]>;
}

/**
 * Builds one batch of extents from per-cluster entries, merging zeros with zeros and data stored back
 * to back: a qcow2 L2 table of 8,192 entries makes tens of extents rather than 8,192. Format loops walk
 * their tables mostly unoptimised (the first is walked before the first byte is out), so the run is
 * kept in three fields rather than in an extent object per entry.
 */
/**
 * The table entries `[first, end)` of `count`, each covering `unit` guest bytes, that a walk of guest
 * bytes `[from, to)` reads (all of them when neither is given).
 */
export function entrySpan(
  from: number | undefined,
  to: number | undefined,
  unit: number,
  count: number,
): { first: number; end: number } {
  const first = Math.min(count, Math.max(0, Math.floor((from ?? 0) / unit)));
  const end = to === undefined ? count : Math.min(count, Math.max(first, Math.ceil(to / unit)));
  return { first, end };
}

export class ExtentRuns {
  readonly extents: Extent[] = [];
  private kind: "zero" | "data" | undefined;
  private host = 0;
  private length = 0;

  zero(length: number): void {
    if (this.kind === "zero") {
      this.length += length;
      return;
    }
    this.flush();
    this.kind = "zero";
    this.length = length;
  }

  data(host: number, length: number): void {
    if (this.kind === "data" && this.host + this.length === host) {
      this.length += length;
      return;
    }
    this.flush();
    this.kind = "data";
    this.host = host;
    this.length = length;
  }

  /** An extent that never merges (an encoded block). */
  push(e: Extent): void {
    this.flush();
    this.kind = undefined;
    this.extents.push(e);
  }

  /** The batch, with the last run in it. */
  done(): Extent[] {
    this.flush();
    this.kind = undefined;
    return this.extents;
  }

  private flush(): void {
    if (this.kind === "zero") this.extents.push({ kind: "zero", length: this.length });
    else if (this.kind === "data") this.extents.push({ kind: "data", host: this.host, length: this.length });
  }
}
