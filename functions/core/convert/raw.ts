import type { DiskMap, Extent } from "./disk-map.ts";
import type { RangeReader } from "./ports.ts";

/** Batch size for raw sources: only matters for forward-only sources, where batches end windows. */
const RAW_BATCH = 64 << 20;

/** A raw image: every guest byte is stored at the same host offset. */
export function openRaw(range: RangeReader): DiskMap {
  const virtualSize = range.size;
  async function* batches(): AsyncGenerator<Extent[]> {
    for (let at = 0; at < virtualSize; at += RAW_BATCH) {
      yield [{ kind: "data", host: at, length: Math.min(RAW_BATCH, virtualSize - at) }];
    }
  }
  return { format: "raw", virtualSize, batches };
}
