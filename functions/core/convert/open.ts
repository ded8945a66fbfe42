import type { DiskMap } from "./disk-map.ts";
import { UnsupportedImageError } from "./errors.ts";
import type { RangeReader, SourceFormat } from "./ports.ts";
import { openQcow2 } from "./qcow2.ts";
import { openRaw } from "./raw.ts";

/** Opens `format` as a guest → host map, reading only its header and top-level tables. */
export async function openDiskMap(
  format: SourceFormat,
  range: RangeReader,
  signal?: AbortSignal,
): Promise<DiskMap> {
  switch (format) {
    case "qcow2":
      return openQcow2(range, signal);
    case "raw":
      if (!Number.isFinite(range.size)) throw new UnsupportedImageError("a raw image needs a known size");
      return openRaw(range);
    default:
      throw new UnsupportedImageError(`conversion from ${format} is not supported`);
  }
}
