import { storedAt } from "../convert/index.ts";
import { isZeros } from "../convert/zeros.ts";
import type { FanoutStorage } from "./ports.ts";

/** The parts one converted range writes: planned numbers from `firstPart`, each `partSize` bytes but the image's last. */
export interface PlannedParts {
  /** What errors call it (`range 3`). */
  name: string;
  firstPart: number;
  lastPart: number;
  /** Bytes of the range. */
  length: number;
  partSize: number;
}

/** Where a converted range's parts go, and the upload whose bytes its verbatim runs repeat. */
export interface PartTarget {
  storage: FanoutStorage;
  /** The stored image's key and multipart upload. */
  key: string;
  uploadId: string;
  /**
   * The staged upload the range was converted from, with the ETag every read of it required. Without
   * an ETag no run is copied from it: a copy could not be held to the bytes that were read.
   */
  upload: { key: string; etag: string | undefined };
  signal: AbortSignal;
  /**
   * Told when storage refuses a copy (of a run of the upload, or of zeros), at most once per kind and
   * range: that part and the range's later parts of that kind are sent.
   */
  onRefused?: (kind: "run" | "zeros", err: unknown) => void;
}

/** What a range stored: its bytes and parts, and the bytes storage copied rather than received. */
export interface PartsWritten {
  bytes: number;
  parts: number;
  copied: number;
}

/**
 * Writes a converted range's output as its planned parts, one at a time, each filled in `buffer` (at
 * least one part's size, reused from part to part: the range holds no more than that one buffer). A part
 * that holds only zeros (the converter's zero runs are known by their buffer, other chunks are compared
 * with zeros while the part holds nothing else) is copied by storage from an object of zeros; a part made
 * of one run of the upload's bytes (`storedAt`) is copied from that range of the upload, on the ETag the
 * range was read with. Any other part, and any copy storage refuses, is sent from the buffer: a refused
 * run is replaced by the bytes the converter read under that same ETag, so whatever storage answers, the
 * part holds the inspected upload's conversion and never another object's bytes. After one refusal, the
 * range sends its later parts of that kind.
 */
export async function writeParts(
  chunks: AsyncIterable<Uint8Array>,
  plan: PlannedParts,
  target: PartTarget,
  buffer: Uint8Array,
): Promise<PartsWritten> {
  const { storage, key, uploadId, signal } = target;
  const etag = target.upload.etag;
  let part = plan.firstPart;
  let written = 0;
  let copied = 0;
  // The part being filled: `fill` bytes of `length`; only zeros while `zeros` (not yet in the buffer).
  let length = 0;
  let fill = 0;
  let zeros = true;
  // Where the part's bytes are stored in the upload, while they are one run there.
  let runAt: number | undefined;
  let copyRuns = etag !== undefined;
  let copyZeros = storage.copyZeros !== undefined;

  const send = () => storage.uploadPart(key, uploadId, part, buffer.subarray(0, fill), signal);

  /**
   * Stores a part of zeros: a copy from an object of zeros, or the zeros sent when that copy is not
   * zeros or storage refuses it (the role may not read or make objects of zeros).
   */
  const storeZeros = async () => {
    if (copyZeros) {
      try {
        if (await storage.copyZeros?.(key, uploadId, part, fill, signal)) return fill;
      } catch (err) {
        signal.throwIfAborted();
        target.onRefused?.("zeros", err);
      }
      copyZeros = false;
    }
    buffer.fill(0, 0, fill);
    await send();
    return 0;
  };

  /** Stores a part that is the upload's bytes at `at`: copied on the upload's ETag, or sent if refused. */
  const storeRun = async (at: number) => {
    try {
      await storage.copyPart(
        key,
        uploadId,
        part,
        { key: target.upload.key, first: at, last: at + fill - 1, ifMatch: etag },
        signal,
      );
      return fill;
    } catch (err) {
      signal.throwIfAborted();
      copyRuns = false;
      target.onRefused?.("run", err);
      await send();
      return 0;
    }
  };

  const flush = async () => {
    if (zeros) copied += await storeZeros();
    else if (copyRuns && runAt !== undefined) copied += await storeRun(runAt);
    else await send();
    written += fill;
    part++;
    fill = 0;
  };

  /** Adds `piece` (stored at `at` in the upload, if known) to the part being filled, which it fits. */
  const add = (piece: Uint8Array, at: number | undefined) => {
    if (fill === 0) {
      length = Math.min(plan.partSize, plan.length - written);
      zeros = true;
      runAt = at;
    } else if (runAt !== undefined && at !== runAt + fill) {
      runAt = undefined;
    }
    if (zeros && isZeros(piece)) {
      fill += piece.byteLength;
      return;
    }
    if (zeros) {
      // The zeros before this piece were only counted; the buffer holds an earlier part.
      buffer.fill(0, 0, fill);
      zeros = false;
    }
    buffer.set(piece, fill);
    fill += piece.byteLength;
  };

  for await (const chunk of chunks) {
    signal.throwIfAborted();
    const base = storedAt(chunk);
    for (let done = 0; done < chunk.byteLength; ) {
      if (written + fill >= plan.length)
        throw new Error(`${plan.name} yielded more than ${plan.length} bytes`);
      const room = fill === 0 ? Math.min(plan.partSize, plan.length - written) : length - fill;
      const n = Math.min(chunk.byteLength - done, room);
      add(chunk.subarray(done, done + n), base === undefined ? undefined : base + done);
      done += n;
      if (fill === length) await flush();
    }
  }
  if (fill > 0) await flush();
  if (written !== plan.length || part !== plan.lastPart + 1) {
    throw new Error(
      `${plan.name} gave ${written} of its ${plan.length} bytes (parts up to ${part - 1} of ${plan.lastPart}; part size ${plan.partSize})`,
    );
  }
  return { bytes: written, parts: part - plan.firstPart, copied };
}
