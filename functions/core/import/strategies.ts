/**
 * One strategy per import plan. Each stores the image under the output key from one read of the upload
 * (`UploadRead`), or keeps the upload itself as the image (a pass-through in storage that keeps
 * versions), or says which plan comes next: the plan of the spool once it is written, or the
 * fallback of a forward-only plan whose image needs ranged reads.
 */
import { convertToQcow2, convertToRaw, gunzipSource, NeedsRangedReads, storedAt } from "../convert/index.ts";
import type { ConvertSource, SourceFormat } from "../convert/ports.ts";
import { ImportRejectedError } from "../errors.ts";
import { type DetectionResult, detectFormat } from "../formats/index.ts";
import type { RangeReader } from "../formats/types.ts";
import type { StoredObject } from "../image/image.ts";
import type { CopyFrom, ObjectStore, Written } from "../ports.ts";
import { fallbackFor, type ImportPlan, type ImportPolicy, planImport, type TargetFormat } from "./plan.ts";
import type { UploadRead } from "./upload-read.ts";

/** Bytes read from each end of an object to plan its import before the single pass. */
const HEAD_PROBE = 1024 * 1024;
const TAIL_PROBE = 4096;

/** What every strategy works with: where to read and write, and the operator's policy. */
export interface ImportContext {
  objects: ObjectStore;
  outputKey: string;
  /** Scratch object for a gzip-wrapped upload whose image is not stored in order; deleted after. */
  spoolKey: string;
  /** Size of the upload. */
  uploadSize: number;
  /** The upload's ETag when its size was taken; a copy of the upload requires it still. */
  uploadEtag?: string | undefined;
  declaredFormat: string | null;
  policy: ImportPolicy;
  signal: AbortSignal;
}

/** The object a plan reads: the upload (through the shared read) or the spool. */
export interface SourceObject {
  key: string;
  size: number;
  /** The upload itself: its sequential read is the shared one. */
  isUpload: boolean;
  /** The version every read of the object names, when storage keeps versions. */
  versionId?: string | undefined;
}

/** A plan, what it was made from, and the object it reads. */
export interface Step {
  plan: ImportPlan;
  detected: DetectionResult;
  object: SourceObject;
}

export type Outcome =
  /** Stored; `kept`: the stored data is the upload itself, that version of it, not a new object. */
  | { written: Written; storedFormat: string; kept?: StoredObject }
  /** Go on with `next`; `readAgain`: its read of the upload starts from the beginning again. */
  | { next: Step; readAgain: boolean };

/** Detects the format of a stored object from its two ends. */
export async function detectObject(
  objects: ObjectStore,
  object: SourceObject,
  signal: AbortSignal,
): Promise<DetectionResult> {
  const { size } = object;
  const range = rangeReader(objects, object, signal);
  const head = await range.read(0, Math.min(size, HEAD_PROBE));
  const tailStart = Math.max(0, size - TAIL_PROBE);
  const tail = await range.read(tailStart, size - tailStart);
  return detectFormat(head, tail, size);
}

/** Carries out `step` with `read`, the current read of the upload. */
export function execute(ctx: ImportContext, step: Step, read: UploadRead): Promise<Outcome> {
  const { plan, object } = step;
  switch (plan.kind) {
    case "pass-through":
      if (!object.isUpload) return passThrough(ctx, object, plan.format, read);
      return object.versionId !== undefined
        ? keepUpload(step, object.versionId, plan.format, read)
        : copyUpload(ctx, step, plan.format, read);
    case "convert":
      return convert(ctx, object, plan.from, plan.to, read);
    case "unwrap":
      return orFallback(step, () => unwrap(ctx, plan.format, read));
    case "unwrap-convert":
      return orFallback(step, () => unwrapThenConvert(ctx, plan.from, plan.to, read));
    case "spool-first":
      return spoolFirst(ctx, read);
    case "refuse":
      return refuse(plan, read);
  }
}

/**
 * The upload as it is, kept where it is: the image's data is the version of the upload this read reads
 * (every read of the import names it), so nothing is written or copied at all. The read takes every
 * digest and runs the inspection; a later write to the upload's key makes a new version, never a change
 * of this one.
 */
async function keepUpload(step: Step, versionId: string, format: string, read: UploadRead): Promise<Outcome> {
  await read.inspected(step.detected);
  const { key, size } = step.object;
  return { written: { size }, storedFormat: format, kept: { key, version_id: versionId } };
}

/**
 * The upload as it is, in storage that keeps no versions (an upload kept in place could then change
 * under the image): copied by storage to the output key, never through the function, while the
 * function reads it once to its end (inspection and every digest). The copy runs beside the read, so
 * the import takes about as long as the longer of the two rather than their sum. Nothing serves the
 * output key before the image is `active`, and the import becomes `active` only once the read has
 * passed: a read that fails stops the copy, waits for it and deletes what it wrote before the failure
 * goes on. The copy requires the ETag the read's size was taken with: an upload replaced meanwhile fails
 * the copy (`ObjectChangedError`) instead of storing bytes nobody checked.
 */
async function copyUpload(
  ctx: ImportContext,
  step: Step,
  format: string,
  read: UploadRead,
): Promise<Outcome> {
  const { objects, signal } = ctx;
  const stop = new AbortController();
  const copying = objects.copy(step.object.key, ctx.outputKey, {
    size: step.object.size,
    signal: AbortSignal.any([signal, stop.signal]),
    ...(ctx.uploadEtag ? { ifMatch: ctx.uploadEtag } : {}),
  });
  // Observed below; this keeps a failure while the read is still going from being reported as unhandled.
  copying.catch(() => undefined);
  try {
    await read.inspected(step.detected);
  } catch (err) {
    stop.abort(err);
    await copying.catch(() => undefined);
    await objects.delete(ctx.outputKey).catch(() => undefined);
    throw err;
  }
  signal.throwIfAborted();
  return { written: await copying, storedFormat: format };
}

/** The spool as it is, read again and written to the output key (its digests are taken as it is written). */
async function passThrough(
  ctx: ImportContext,
  object: SourceObject,
  format: string,
  read: UploadRead,
): Promise<Outcome> {
  const { objects, signal } = ctx;
  const body = objects.read(object.key, signal);
  const written = await objects.write(ctx.outputKey, body, signal, { sizeHint: object.size, tap: read.tap });
  return { written, storedFormat: format };
}

/**
 * Converted from the upload (ranged reads beside the shared one) or from the spool (ranged reads only).
 * To raw from the upload, the output's runs that are the upload's bytes verbatim (a qcow2's clusters
 * stored back to back) are copied by storage from the version read, not sent: the function reads the
 * upload once and sends only what it had to make.
 */
async function convert(
  ctx: ImportContext,
  object: SourceObject,
  from: SourceFormat,
  to: TargetFormat,
  read: UploadRead,
): Promise<Outcome> {
  const range = rangeOf(ctx, object);
  const source: ConvertSource = object.isUpload
    ? { range, sequential: read.read, size: object.size }
    : { range };
  const copyFrom: CopyFrom | undefined =
    object.isUpload && to === "raw"
      ? { key: object.key, versionId: object.versionId, etag: ctx.uploadEtag, offsetOf: storedAt }
      : undefined;
  return { written: await convertInto(ctx, from, to, source, read, copyFrom), storedFormat: to };
}

/**
 * Gunzipped into the output. The unwrapped size is unknown: no size hint, so the store starts with its
 * smallest parts and grows them as the body does (S3 allows 10,000).
 */
async function unwrap(ctx: ImportContext, format: string, read: UploadRead): Promise<Outcome> {
  const output = checkedAtEnd(gunzipSource(read.read).stream(ctx.signal), format);
  const written = await ctx.objects.write(ctx.outputKey, output, ctx.signal, { tap: read.tap });
  return { written, storedFormat: format };
}

/** Gunzipped and converted forward only: no ranged reads, the converter asks only for bytes ahead. */
async function unwrapThenConvert(
  ctx: ImportContext,
  from: SourceFormat,
  to: TargetFormat,
  read: UploadRead,
): Promise<Outcome> {
  const written = await convertInto(ctx, from, to, { sequential: gunzipSource(read.read) }, read);
  return { written, storedFormat: to };
}

/** Gunzipped into the spool object; the spool's two ends are detected and its import planned again. */
async function spoolFirst(ctx: ImportContext, read: UploadRead): Promise<Outcome> {
  const { objects, signal } = ctx;
  const spool = await objects.write(ctx.spoolKey, gunzipSource(read.read).stream(signal), signal);
  const object: SourceObject = { key: ctx.spoolKey, size: spool.size, isUpload: false };
  const detected: DetectionResult = { ...(await detectObject(objects, object, signal)), compression: "gzip" };
  const plan = planImport({
    detected,
    wrapped: false,
    declaredFormat: ctx.declaredFormat,
    policy: ctx.policy,
  });
  return { next: { plan, detected, object }, readAgain: false };
}

/** Nothing stored; when the plan says so the inspector reads the whole upload first and speaks first. */
async function refuse(plan: ImportPlan & { kind: "refuse" }, read: UploadRead): Promise<never> {
  if (plan.inspectFirst) await read.inspectAll();
  throw new ImportRejectedError(plan.reason, plan.message);
}

/**
 * Runs a forward-only strategy. When the image needs ranged reads the attempt's write has been aborted,
 * and the plan's fallback comes back as the next step, to be read again from the upload's start.
 */
async function orFallback(step: Step, attempt: () => Promise<Outcome>): Promise<Outcome> {
  const fallback = fallbackFor(step.plan);
  try {
    return await attempt();
  } catch (err) {
    if (!(err instanceof NeedsRangedReads) || fallback === undefined) throw err;
    return { next: { ...step, plan: fallback }, readAgain: true };
  }
}

/** Ranged reads of a stored object (of its version, when it names one), for converters that need random access. */
function rangeOf(ctx: ImportContext, object: SourceObject): RangeReader {
  return rangeReader(ctx.objects, object, ctx.signal);
}

function rangeReader(objects: ObjectStore, object: SourceObject, signal: AbortSignal): RangeReader {
  const { key, size, versionId } = object;
  const options = versionId !== undefined ? { versionId } : {};
  return { size, read: (offset, length, s) => objects.readRange(key, offset, length, s ?? signal, options) };
}

/** Converts `source` to `to` into the output key, hashing what is stored. */
async function convertInto(
  ctx: ImportContext,
  from: SourceFormat,
  to: TargetFormat,
  source: ConvertSource,
  read: UploadRead,
  copyFrom?: CopyFrom,
): Promise<Written> {
  const { signal } = ctx;
  let virtualSize: number | undefined;
  const options = {
    signal,
    maxVirtualSize: ctx.policy.maxVirtualSize,
    // Smaller read windows than the converter's defaults keep the whole importer, part buffers
    // included, well under 256 MiB; bench/ measured no loss of speed.
    windowSize: 4 << 20,
    readAhead: 2,
    // The store copies each chunk into a part before asking for the next: buffers are reused.
    recycle: true,
    onMap: (map: { virtualSize: number }) => {
      virtualSize = map.virtualSize;
    },
  };
  const converted =
    to === "qcow2" ? convertToQcow2(from, source, options) : convertToRaw(from, source, options);
  // The first chunk comes once the converter has mapped the image, and with it the output's size
  // (the multipart part size depends on it: S3 allows 10,000 parts).
  const output = await peek(converted);
  return ctx.objects.write(ctx.outputKey, output, signal, {
    sizeHint: virtualSize ?? ctx.uploadSize,
    tap: read.tap,
    ...(copyFrom ? { copyFrom } : {}),
  });
}

/** Starts an iterable (so its first chunk is ready) and gives back one that yields everything. */
async function peek(source: AsyncIterable<Uint8Array>): Promise<AsyncIterable<Uint8Array>> {
  const it = source[Symbol.asyncIterator]();
  const first = await it.next();
  return (async function* () {
    if (first.done) return;
    yield first.value;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  })();
}

/**
 * Passes an unwrapped gzip upload on, keeping its last `TAIL_PROBE` bytes back until the end: there it
 * detects the image again from both its ends (a fixed vhd's footer is the last 512 bytes) and, when
 * that says another format than `expected`, signals NeedsRangedReads instead of passing them on, so
 * the store aborts the write.
 */
async function* checkedAtEnd(
  source: AsyncIterable<Uint8Array>,
  expected: string,
): AsyncGenerator<Uint8Array> {
  const head = new HeadKeeper(HEAD_PROBE);
  const tail = new TailHolder(TAIL_PROBE);
  let total = 0;
  for await (const chunk of source) {
    head.keep(chunk);
    total += chunk.length;
    yield* tail.pass(chunk);
  }
  const again = detectFormat(head.bytes(), tail.held, total);
  if (again.format !== expected) {
    throw new NeedsRangedReads(`the unwrapped image ends like ${again.format}, not ${expected}`);
  }
  if (tail.held.length > 0) yield tail.held;
}

/** Keeps the first `limit` bytes of a stream. */
class HeadKeeper {
  private readonly head: Uint8Array;
  private length = 0;

  constructor(limit: number) {
    this.head = new Uint8Array(limit);
  }

  keep(chunk: Uint8Array): void {
    if (this.length >= this.head.length) return;
    const n = Math.min(this.head.length - this.length, chunk.length);
    this.head.set(chunk.subarray(0, n), this.length);
    this.length += n;
  }

  bytes(): Uint8Array {
    return this.head.subarray(0, this.length);
  }
}

/** Passes a stream on except its last `size` bytes, which it holds (`held`) until the caller decides. */
class TailHolder {
  held = new Uint8Array(0);

  constructor(private readonly size: number) {}

  /** What may go on now that `chunk` has come. */
  *pass(chunk: Uint8Array): Generator<Uint8Array> {
    if (chunk.length >= this.size) {
      if (this.held.length > 0) yield this.held;
      if (chunk.length > this.size) yield chunk.subarray(0, chunk.length - this.size);
      this.held = chunk.slice(chunk.length - this.size);
      return;
    }
    const joined = new Uint8Array(this.held.length + chunk.length);
    joined.set(this.held);
    joined.set(chunk, this.held.length);
    const excess = Math.max(0, joined.length - this.size);
    if (excess > 0) yield joined.subarray(0, excess);
    this.held = joined.slice(excess);
  }
}
