import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import {
  createInspector,
  type InspectionResult,
  inspectRanges,
  type RangeReader,
  UnsafeImageError,
  UnsupportedFormatError,
} from "../../functions/core/formats/index.ts";
import { declaredMatches } from "../../functions/core/import/plan.ts";
import type { ImportPolicy } from "./api.ts";
import { humanBytes } from "./units.ts";

const READ_CHUNK = 1024 * 1024;
/**
 * Limits when the API publishes no policy: none on the virtual size, and a gzip ratio that stops a bomb
 * from inflating for ever on this machine. The importer applies the operator's own limits either way.
 */
const FALLBACK_MAX_GZIP_RATIO = 1024;

/** Whether the importer takes a file inspected as `detected` under the declared `disk_format`: its own rule. */
export { declaredMatches };

/** The file would be killed on import: refused here, before a byte is sent, with the importer's reason. */
export class ImageRefusedError extends Error {
  override name = "ImageRefusedError";
  constructor(
    readonly reason: "UNSAFE_IMAGE" | "UNSUPPORTED_FORMAT" | "FORMAT_MISMATCH",
    message: string,
    /** The named safety check that failed, for UNSAFE_IMAGE. */
    readonly check?: string,
  ) {
    super(message);
  }
}

export interface LocalInspection extends InspectionResult {
  /** sha256 of the file, when asked for (read in the same pass). */
  sha256?: string;
}

/**
 * Inspects a local image file with the importer's own streaming inspector (its named safety checks,
 * the operator's virtual size and gzip limits). Without a sha256 to compute, only the bytes the verdict
 * depends on are read (the head, what the format's header points at, the tail; every byte of a gzip
 * file): the same verdict as reading it all. With one, the file is read once, hashed in the same pass.
 * Memory: the inspector's captures (at most 8 MiB) and one 1 MiB read chunk (two without a hash).
 */
export async function inspectFile(
  path: string,
  size: number,
  policy: ImportPolicy | undefined,
  options: { sha256?: boolean; signal?: AbortSignal | undefined } = {},
): Promise<LocalInspection> {
  const limits = {
    maxVirtualSize: policy?.max_virtual_size ?? Number.MAX_SAFE_INTEGER,
    maxGzipRatio: policy?.max_gzip_ratio ?? FALLBACK_MAX_GZIP_RATIO,
    ...(options.signal ? { signal: options.signal } : {}),
  };
  try {
    const result = options.sha256
      ? await inspectAndHash(path, size, limits)
      : await inspectFileRanges(path, size, limits);
    if (result.format === "luks") {
      throw new ImageRefusedError(
        "UNSUPPORTED_FORMAT",
        "the file is a luks-encrypted volume; Hangar stores disk images only",
      );
    }
    return result;
  } catch (err) {
    if (err instanceof UnsafeImageError) throw new ImageRefusedError("UNSAFE_IMAGE", err.message, err.check);
    if (err instanceof UnsupportedFormatError) throw new ImageRefusedError("UNSUPPORTED_FORMAT", err.message);
    throw err;
  }
}

type Limits = { maxVirtualSize: number; maxGzipRatio: number; signal?: AbortSignal };

/** Every byte through the inspector and sha256, in one read of the file. */
async function inspectAndHash(path: string, size: number, limits: Limits): Promise<LocalInspection> {
  const inspector = createInspector({ ...limits, totalSize: size });
  const hash = createHash("sha256");
  const stream = createReadStream(path, { highWaterMark: READ_CHUNK, signal: limits.signal });
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    await inspector.update(chunk as Buffer);
  }
  return { ...(await inspector.finish()), sha256: hash.digest("hex") };
}

/** Only the ranges the verdict depends on, read with `pread`; a file shorter than `size` is an error. */
async function inspectFileRanges(path: string, size: number, limits: Limits): Promise<InspectionResult> {
  const fh = await open(path, "r");
  try {
    const reader: RangeReader = {
      size,
      async read(offset, length, _signal, into) {
        const buf = into ?? new Uint8Array(length);
        for (let done = 0; done < length; ) {
          const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
          if (bytesRead === 0)
            throw new Error(`the file ended early at byte ${offset + done}; did it change?`);
          done += bytesRead;
        }
        return buf;
      },
    };
    return (await inspectRanges(reader, limits, READ_CHUNK)).result;
  } finally {
    await fh.close();
  }
}

/** The `disk_format` to declare: the one given, if the file is that format, else the one found. */
export function diskFormatFor(declared: string | undefined, found: LocalInspection): string {
  if (declared === undefined) return found.format;
  if (declaredMatches(declared, found.format)) return declared;
  const gzip = found.compression === "gzip" ? " (gzip-compressed)" : "";
  throw new ImageRefusedError(
    "FORMAT_MISMATCH",
    `--disk-format ${declared} does not match the file, which is ${found.format}${gzip}; ` +
      `pass --disk-format ${found.format}, or leave it out and it is filled in`,
  );
}

/** What the importer will do with the file under this operator's policy, in one line. */
export function policyLine(found: LocalInspection, policy: ImportPolicy | undefined): string {
  const what = `${found.compression === "gzip" ? "gzip-compressed " : ""}${found.format}`;
  const virtual = `${humanBytes(found.virtualSize)} virtual`;
  if (!policy) return `${what} (${virtual}); this API does not say how it stores images`;
  const accepted = policy.accepted_formats.includes(found.format);
  const stored = accepted ? found.format : policy.preferred_format;
  const how = accepted
    ? found.compression === "gzip"
      ? `unwrapped and stored as ${stored}`
      : `stored as it is`
    : `converted and stored as ${stored}`;
  // A raw image is as large as its virtual size; the importer's qcow2 keeps only clusters holding data.
  const size = stored === "raw" ? `, ${humanBytes(found.virtualSize)}` : "";
  return (
    `${what} (${virtual}) → ${how}${size} ` +
    `(this Hangar keeps ${policy.accepted_formats.join(", ")} as they are and converts others to ${policy.preferred_format})`
  );
}
