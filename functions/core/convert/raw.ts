import type { DiskMap, Extent } from "./disk-map.ts";
import type { RangeReader } from "./ports.ts";

/** Batch size for raw sources: only matters for forward-only sources, where batches end windows. */
const RAW_BATCH = 64 << 20;

/** A raw image: every guest byte is stored at the same host offset. */
export function openRaw(range: RangeReader): DiskMap {
  const virtualSize = range.size;
  // Seeks to any byte: a walk of `[from, to)` covers exactly that.
  async function* batches(_signal?: AbortSignal, from = 0, to = virtualSize): AsyncGenerator<Extent[]> {
    const end = Math.min(virtualSize, to);
    for (let at = Math.max(0, from); at < end; at += RAW_BATCH) {
      yield [{ kind: "data", host: at, length: Math.min(RAW_BATCH, end - at) }];
    }
  }
  return { format: "raw", virtualSize, seekUnit: 1, batches };
}
