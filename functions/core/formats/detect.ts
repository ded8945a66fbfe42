/**
 * Early format detection from the first 64 KiB and the last 512 bytes of an object (two ranged
 * GETs), so the importer can choose its path before streaming. It runs the same probes as the
 * full inspector and refuses polyglots and unsupported formats the same way.
 *
 * For a gzip upload the head is inflated (at most `DETECT_INFLATE_LIMIT` bytes of output) and
 * probed; the inflated stream's tail is unknown here, so a fixed VHD inside gzip (whose only
 * footer is at the end) is reported as raw: only `finish()` of the full inspector sees it.
 */
import { constants, gunzipSync } from "node:zlib";
import { KiB, MiB } from "./bytes.ts";
import { CHECK, fail, failureMessage } from "./checks.ts";
import { UnsafeImageError, UnsupportedFormatError } from "./errors.ts";
import { PROBE_HEAD_BYTES, PROBE_TAIL_BYTES } from "./format-module.ts";
import { isGzip } from "./gzip.ts";
import { decideFormat, probeAll } from "./layer-inspection.ts";
import type { CheckResult, Compression, DetectionResult } from "./types.ts";

/** Compressed bytes added per inflate attempt; each adds at most ~1032× that much output. */
const DETECT_INFLATE_STEP = 2 * KiB;
const DETECT_INFLATE_LIMIT = 4 * MiB;

/** Inflates as much of a gzip head as yields `PROBE_HEAD_BYTES`, never more than the limit. */
function inflateHead(head: Uint8Array): Uint8Array {
  let best = new Uint8Array(0);
  for (
    let n = Math.min(DETECT_INFLATE_STEP, head.length);
    ;
    n = Math.min(n + DETECT_INFLATE_STEP, head.length)
  ) {
    try {
      best = new Uint8Array(
        gunzipSync(head.subarray(0, n), {
          finishFlush: constants.Z_SYNC_FLUSH,
          maxOutputLength: DETECT_INFLATE_LIMIT,
        }),
      );
    } catch (error) {
      if (error instanceof RangeError) break;
      const result = fail(
        CHECK.malformedHeader,
        `gzip: the compressed stream is invalid (${(error as Error).message})`,
      );
      throw new UnsafeImageError(result.name, failureMessage(result), [result], { cause: error });
    }
    if (best.length >= PROBE_HEAD_BYTES || n >= head.length) break;
  }
  return best.subarray(0, PROBE_HEAD_BYTES);
}

/** Format, compression and (when the probe window tells it) subformat of an object, from its ends. */
export function detectFormat(head: Uint8Array, tail: Uint8Array, totalSize: number): DetectionResult {
  let compression: Compression = "none";
  let h = head.subarray(0, PROBE_HEAD_BYTES);
  let t = tail.subarray(Math.max(0, tail.length - PROBE_TAIL_BYTES));
  if (isGzip(h)) {
    const outer = probeAll(h, t, totalSize);
    const alsoMatches = [...outer.supported.map((m) => m.name), ...outer.unsupported];
    if (alsoMatches.length > 0) {
      const result = fail(
        CHECK.polyglot,
        `the image is valid as more than one format (gzip, ${alsoMatches.join(", ")}); such images can be read differently by different tools and are refused`,
      );
      throw new UnsafeImageError(result.name, failureMessage(result), [result]);
    }
    compression = "gzip";
    h = inflateHead(head);
    t = new Uint8Array(0);
    if (isGzip(h)) {
      throw new UnsupportedFormatError(
        "gzip",
        "the upload is gzip inside gzip; compress the image only once",
      );
    }
  }
  const { supported, unsupported } = probeAll(h, t, totalSize);
  const checks: CheckResult[] = [];
  const module = decideFormat(supported, unsupported, checks);
  if (module === undefined) return { format: "raw", compression };
  const subformat = module.subformatFromProbe?.(h, t, totalSize);
  return subformat === undefined
    ? { format: module.name, compression }
    : { format: module.name, compression, subformat };
}
