/**
 * Inspection of an object with random access (a browser's `File`, a file on disk): the same streaming
 * inspector and the same verdict, but only the bytes a verdict depends on are read — the head, the
 * regions a format's header points at, and the last `TAIL_BYTES`. The rest of the stream is fed as
 * zeros, which nothing but the rolling tail ever looks at (and the tail is always real bytes). A gzip
 * upload cannot be skipped through: every byte is read.
 *
 * Memory bound: one chunk (`chunkBytes`) being read, one zero chunk of the same size, and the
 * inspector's own capture (≤ `MAX_CAPTURE_BYTES`).
 */
import { MiB } from "./bytes.ts";
import { TAIL_BYTES } from "./capture.ts";
import { createInspector } from "./inspector.ts";
import type { InspectionResult, InspectOptions, RangeReader } from "./types.ts";

export interface RangeInspection {
  result: InspectionResult;
  /** Bytes actually read from the object. */
  bytesRead: number;
}

/**
 * Inspects `reader`'s object in chunks of `chunkBytes`, reading only what the verdict needs; resolves
 * with the same result, and rejects with the same error, as streaming every byte would.
 */
export async function inspectRanges(
  reader: RangeReader,
  opts: Omit<InspectOptions, "totalSize">,
  chunkBytes = 1 * MiB,
): Promise<RangeInspection> {
  const size = reader.size;
  const inspector = createInspector({ ...opts, totalSize: size });
  const zeros = new Uint8Array(Math.min(chunkBytes, size));
  const tailStart = Math.max(0, size - TAIL_BYTES);
  let bytesRead = 0;
  for (let offset = 0; offset < size; ) {
    const end = Math.min(offset + chunkBytes, size);
    const wanted = inspector.nextWanted();
    if ((wanted !== undefined && wanted < end) || end > tailStart) {
      const chunk = await reader.read(offset, end - offset, opts.signal);
      bytesRead += chunk.length;
      await inspector.update(chunk);
    } else {
      await inspector.update(zeros.subarray(0, end - offset));
    }
    offset = end;
  }
  return { result: await inspector.finish(), bytesRead };
}
