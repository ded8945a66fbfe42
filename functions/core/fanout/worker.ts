import {
  type ConvertOptions,
  type ConvertSource,
  convertRangeToRaw,
  type GuestRange,
  type RangeReader,
  type SourceFormat,
} from "../convert/index.ts";
import { imageKey } from "../image/image.ts";
import {
  FanoutSupersededError,
  held,
  leaseUntil,
  renew,
  type StepDeps,
  type StepInput,
  withHeartbeat,
} from "./held.ts";
import type { FanoutJob } from "./job.ts";
import { writeParts } from "./parts.ts";
import type { FanoutRange } from "./plan.ts";
import type { FanoutProgressStore, FanoutStorage } from "./ports.ts";

/** Part buffers an instance keeps between ranges. */
const MAX_FREE_BUFFERS = 4;

/** Yields exactly the raw bytes `[start, end)` of the image (core/convert's `convertRangeToRaw`). */
export type RangeConverter = (
  format: SourceFormat,
  source: ConvertSource,
  range: GuestRange,
  opts: ConvertOptions,
) => AsyncIterable<Uint8Array>;

export interface WorkerDeps extends StepDeps {
  storage: FanoutStorage;
  progress: FanoutProgressStore;
  /** Core/convert's `convertRangeToRaw` unless given. */
  convertRange?: RangeConverter;
  maxVirtualSize: number;
}

export interface ConvertInput extends StepInput {
  uploadId: string;
  range: FanoutRange;
}

/** A range reader over the staged upload, every read conditional on the ETag it was inspected with. */
export function uploadReader(
  storage: FanoutStorage,
  job: Pick<FanoutJob, "upload_key" | "upload_size" | "upload_etag">,
  signal?: AbortSignal,
): RangeReader {
  return {
    size: job.upload_size,
    async read(offset, length, readSignal, into) {
      const out = into ?? new Uint8Array(length);
      let at = 0;
      for await (const chunk of storage.readRange(job.upload_key, offset, length, {
        ifMatch: job.upload_etag ?? undefined,
        signal: readSignal ?? signal,
      })) {
        if (at + chunk.byteLength > length) throw new Error(`storage sent more than ${length} bytes`);
        out.set(chunk, at);
        at += chunk.byteLength;
      }
      if (at !== length) throw new Error(`storage sent ${at} of ${length} bytes at ${offset}`);
      return out;
    },
  };
}

/**
 * The fan-out's worker (the `fanoutWorker` function): writes one range's parts of the stored image's
 * multipart upload. Converted ranges are read from the upload by ranged reads and converted to raw,
 * each part filled in one buffer the instance reuses; parts of zeros and parts that are one run of the
 * upload's bytes are copied by storage (`writeParts`). Ranges of an upload stored as it is are copied by
 * storage (UploadPartCopy). Every part is written whole under its planned number, so a retried range
 * writes the same parts again and replaces them. Counts the range in `import_progress.ranges_done` once.
 */
export function createFanoutWorker(deps: WorkerDeps) {
  const { images, storage } = deps;

  // Part buffers of this instance's ranges, kept for the next: one per range written at once (on Lambda,
  // one range at a time; the local runtime runs a function's invocations in one process).
  const free: Uint8Array[] = [];
  const takeBuffer = (size: number): Uint8Array => {
    const buf = free.pop();
    return buf && buf.byteLength >= size ? buf : new Uint8Array(size);
  };

  async function convertParts(job: FanoutJob, input: ConvertInput, signal: AbortSignal): Promise<number> {
    const { range, uploadId } = input;
    const from = job.convert_from;
    if (!from) throw new Error("a converted fan-out needs the upload's format");
    const source: ConvertSource = { range: uploadReader(storage, job, signal) };
    // Each chunk is copied into the part buffer (or only counted, or copied by storage) before the next
    // is asked for: the converter may reuse its buffers.
    const out = (deps.convertRange ?? convertRangeToRaw)(
      from,
      source,
      { start: range.offset, end: range.offset + range.length },
      { signal, maxVirtualSize: deps.maxVirtualSize, recycle: true },
    );
    const buffer = takeBuffer(Math.min(job.part_size, range.length));
    try {
      const written = await writeParts(
        out,
        { ...range, name: `range ${range.index}`, partSize: job.part_size },
        {
          storage,
          key: imageKey(input.imageId),
          uploadId,
          upload: { key: job.upload_key, etag: job.upload_etag ?? undefined },
          signal,
          onRefused: (kind, err) => {
            deps.log.warn("fan-out copy refused, parts sent instead", {
              imageId: input.imageId,
              range: range.index,
              kind,
              error: err instanceof Error ? err.name : String(err),
            });
          },
        },
        buffer,
      );
      return written.copied;
    } finally {
      if (free.length < MAX_FREE_BUFFERS) free.push(buffer);
    }
  }

  async function copyParts(job: FanoutJob, input: ConvertInput, signal: AbortSignal): Promise<number> {
    const { range, uploadId } = input;
    const key = imageKey(input.imageId);
    for (let part = range.firstPart; part <= range.lastPart; part++) {
      signal.throwIfAborted();
      const first = range.offset + (part - range.firstPart) * job.part_size;
      const last = Math.min(first + job.part_size, range.offset + range.length) - 1;
      await storage.copyPart(
        key,
        uploadId,
        part,
        { key: job.upload_key, first, last, ifMatch: job.upload_etag ?? undefined },
        signal,
      );
    }
    return input.range.length;
  }

  return {
    async convert(input: ConvertInput): Promise<void> {
      const { job } = await held(images, input);
      if (job.upload_id !== input.uploadId) {
        throw new FanoutSupersededError(`upload ${input.uploadId} is not the image's any more`);
      }
      await renew(deps, input);
      const started = Date.now();
      const copied = await withHeartbeat(deps, input, (signal) =>
        job.mode === "copy" ? copyParts(job, input, signal) : convertParts(job, input, signal),
      );
      const now = deps.clock.now();
      const ours = await deps.progress.record(
        input.imageId,
        input.execution,
        { add: { ranges_done: 1 }, once: input.range.index },
        leaseUntil(deps.clock),
        now.toISOString(),
      );
      if (!ours)
        throw new FanoutSupersededError(`image ${input.imageId} is not imported by ${input.execution}`);
      deps.log.info("fan-out range written", {
        imageId: input.imageId,
        range: input.range.index,
        bytes: input.range.length,
        parts: input.range.lastPart - input.range.firstPart + 1,
        mode: job.mode,
        copied,
        ms: Date.now() - started,
      });
    },
  };
}
