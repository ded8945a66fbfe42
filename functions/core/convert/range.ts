import type { DiskMap, Extent } from "./disk-map.ts";
import { CorruptImageError, NeedsRangedReads } from "./errors.ts";
import { checkVirtualSize, openDiskMap } from "./open.ts";
import type { ConvertSource, RangeReader, SourceFormat } from "./ports.ts";
import { openSource } from "./source.ts";
import { type ConvertOptions, rawChunks } from "./to-raw.ts";

/** Guest bytes `[start, end)` of an image's raw output. */
export interface GuestRange {
  readonly start: number;
  readonly end: number;
}

/** The guest bytes `[from, to)` of extent `e` (`0 ≤ from < to ≤ e.length`), as an extent of their own. */
function sliceExtent(e: Extent, from: number, to: number): Extent {
  if (from === 0 && to === e.length) return e;
  const length = to - from;
  if (e.kind === "zero") return { kind: "zero", length };
  if (e.kind === "data") return { kind: "data", host: e.host + from, length };
  // An encoded block cannot be read in part: it is decoded whole and cut.
  const decode = e.decode;
  const whole = e.length;
  return {
    kind: "encoded",
    host: e.host,
    hostLength: e.hostLength,
    length,
    decode: async (stored) => {
      const bytes = await decode(stored);
      if (bytes.length !== whole) {
        throw new CorruptImageError(
          `a compressed block at offset ${e.host} decodes to ${bytes.length} bytes, expected ${whole}`,
        );
      }
      return bytes.subarray(from, to);
    },
  };
}

/**
 * The extents of `batch`, which starts at guest offset `at`, that fall in `[start, end)`, cut to it;
 * and the guest offset after the batch (or after the extent that reaches `end`).
 */
function cutBatch(batch: readonly Extent[], at: number, start: number, end: number) {
  const out: Extent[] = [];
  for (const e of batch) {
    const next = at + e.length;
    if (next > start && at < end)
      out.push(sliceExtent(e, Math.max(start, at) - at, Math.min(end, next) - at));
    at = next;
    if (at >= end) break;
  }
  return { out, at };
}

/**
 * `map` cut to guest bytes `[start, end)`: a map of `end - start` bytes. Extents that straddle a bound
 * are split (an encoded one is decoded whole and cut). A map with a `seekUnit` is asked for the
 * batches of `[start, end)` only, so the tables outside it are not read; any other is walked from
 * guest 0 and the extents before `start` dropped. Batches after `end` are not asked for.
 */
export function sliceDiskMap(map: DiskMap, start: number, end: number): DiskMap {
  const unit = map.seekUnit;
  return {
    format: map.format,
    virtualSize: end - start,
    async *batches(signal?: AbortSignal) {
      if (end <= start) return;
      let at = unit ? Math.floor(start / unit) * unit : 0;
      for await (const batch of unit ? map.batches(signal, start, end) : map.batches(signal)) {
        const cut = cutBatch(batch, at, start, end);
        at = cut.at;
        if (cut.out.length > 0) yield cut.out;
        // Leaving the loop closes the format's walk: no table after the range is read.
        if (at >= end) return;
      }
    },
  };
}

function checkRangeBounds(range: GuestRange): void {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new RangeError(`invalid guest range [${start}, ${end})`);
  }
}

/**
 * The size of `format`'s raw output (its virtual size), reading only the header and top-level tables:
 * what a caller cuts into ranges for `convertRangeToRaw`. Refuses, like the converters, an image
 * above `maxVirtualSize`.
 */
export async function rawOutputSize(
  format: SourceFormat,
  range: RangeReader,
  opts: { signal?: AbortSignal; maxVirtualSize?: number } = {},
): Promise<number> {
  const map = await openDiskMap(format, range, opts.signal);
  checkVirtualSize(map, opts.maxVirtualSize);
  return map.virtualSize;
}

/**
 * Bytes `[range.start, range.end)` of the raw output of a disk image: exactly `end - start` bytes,
 * identical to that stretch of `convertToRaw`'s output for the same image, in chunks of about
 * `chunkSize`. Reads only through `source.range` (a sequential stream is not used): the header and
 * top-level tables, the second-level tables that cover the range (for formats whose map seeks; see
 * `DiskMap.seekUnit`) and the range's data. Memory as `convertToRaw`, independent of the image size
 * and of the range's. A range that runs past the image's virtual size is refused with a RangeError
 * before any byte is produced; an empty range produces nothing. `onMap` is told the whole image's map.
 */
export async function* convertRangeToRaw(
  format: SourceFormat,
  source: ConvertSource,
  range: GuestRange,
  opts: ConvertOptions = {},
): AsyncGenerator<Uint8Array> {
  checkRangeBounds(range);
  if (!source.range) throw new NeedsRangedReads("converting one range of an image needs ranged reads");
  const opened = openSource({ range: source.range }, opts.signal);
  try {
    const map = await openDiskMap(format, opened.meta, opts.signal);
    checkVirtualSize(map, opts.maxVirtualSize);
    if (range.end > map.virtualSize) {
      throw new RangeError(
        `guest range [${range.start}, ${range.end}) runs past the image's virtual size of ${map.virtualSize} bytes`,
      );
    }
    opts.onMap?.(map);
    if (range.end === range.start) return;
    yield* rawChunks(sliceDiskMap(map, range.start, range.end), opened.data, opts, false);
  } finally {
    await opened.close();
  }
}
