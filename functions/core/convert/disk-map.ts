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
   * Extents in guest order, in batches: one batch per metadata table read (an L2 table, a grain table,
   * a stretch of BAT). Reading the next batch may read metadata, so a forward-only source must have
   * issued the reads for the previous batch first.
   */
  batches(signal?: AbortSignal): AsyncIterable<readonly Extent[]>;
}
