import { CHECK } from "../formats/checks.ts";
import { UnsafeImageError } from "../formats/errors.ts";
import type { DiskMap } from "./disk-map.ts";
import { NeedsRangedReads, UnsupportedImageError } from "./errors.ts";
import type { RangeReader, SourceFormat } from "./ports.ts";
import { openQcow2 } from "./qcow2.ts";
import { openRaw } from "./raw.ts";
import { openVdi } from "./vdi.ts";
import { openVhd } from "./vhd.ts";
import { openVhdx } from "./vhdx.ts";
import { openVmdk } from "./vmdk.ts";

/** Opens `format` as a guest → host map, reading only its header and top-level tables. */
export async function openDiskMap(
  format: SourceFormat,
  range: RangeReader,
  signal?: AbortSignal,
): Promise<DiskMap> {
  switch (format) {
    case "qcow2":
      return openQcow2(range, signal);
    case "vmdk":
      return openVmdk(range, signal);
    case "vhd":
      return openVhd(range, signal);
    case "vhdx":
      return openVhdx(range, signal);
    case "vdi":
      return openVdi(range, signal);
    case "raw":
      if (!Number.isFinite(range.size)) throw new NeedsRangedReads("a raw image needs a known size");
      return openRaw(range);
    default:
      throw new UnsupportedImageError(`conversion from ${format} is not supported`);
  }
}

/**
 * Refuses a map larger than the operator allows before any byte is produced: a few hundred bytes of
 * qcow2 can declare terabytes of zeros, and converting them is work nobody asked for.
 */
export function checkVirtualSize(map: DiskMap, maxVirtualSize: number | undefined): void {
  if (maxVirtualSize !== undefined && map.virtualSize > maxVirtualSize) {
    throw new UnsafeImageError(
      CHECK.virtualSize,
      `${CHECK.virtualSize}: the image declares ${map.virtualSize} bytes, above the limit of ${maxVirtualSize}`,
    );
  }
}
