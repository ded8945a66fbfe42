import {
  AbortMultipartUploadCommand,
  type CompletedPart,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { sharedBuffers } from "../../core/buffers.ts";
import { isZeros } from "../../core/convert/zeros.ts";
import type { CopyFrom, Written } from "../../core/ports.ts";
import { MAX_PART_SIZE, MIN_PART_SIZE } from "../../core/uploads/plan.ts";
import { copySource } from "./copy.ts";
import { copyZeros, partCopier } from "./part-copy.ts";
import type { ZeroSource } from "./zero-object.ts";

/** Parts written before the part size doubles: 10,000 parts then hold S3's largest object (5 TiB) from any base of 5 MiB or more. */
export const GROW_EVERY = 900;

/**
 * Size of part `n` (1-based): `base` for the first `growAfter` parts, then doubled every `growEvery`
 * parts, at most 5 GiB.
 */
export function partSizeAt(n: number, base: number, growAfter = 0, growEvery = GROW_EVERY): number {
  return Math.min(MAX_PART_SIZE, base * 2 ** Math.floor(Math.max(0, n - 1 - growAfter) / growEvery));
}

export interface WriteObjectOptions {
  client: S3Client;
  bucket: string;
  key: string;
  /**
   * Bytes per part (at least 5 MiB); a body that fits one part is sent with a single PutObject. After
   * `growAfter` parts (default 0) parts double every `growEvery` (default 900), so that a body larger
   * than expected still fits S3's 10,000 parts.
   */
  partSize: number;
  growAfter?: number;
  growEvery?: number;
  /** Parts uploading at once. */
  queueSize: number;
  contentType?: string;
  signal?: AbortSignal;
  /**
   * Sees every byte written, in order, one part at a time, before the part is sent. The part's buffer
   * is not reused until the promise returned settles, so a worker thread may read it in place (it is
   * backed by a SharedArrayBuffer); a rejection fails the write.
   */
  tap?: (bytes: Uint8Array) => Promise<void> | undefined;
  /**
   * Objects of zeros in the same bucket: a part of a multipart upload that holds only zeros is then
   * copied from one inside storage (UploadPartCopy) instead of sent. The tap still sees its bytes.
   */
  zeros?: ZeroSource;
  /**
   * An object in the same bucket that the body repeats in places (`CopyFrom.offsetOf`): a part of a
   * multipart upload made only of one run of its bytes is copied from it inside storage (UploadPartCopy
   * of that range, naming the version read or requiring its ETag) instead of sent. The part is still
   * filled and tapped as any other, and a copy storage refuses is replaced by the part's bytes sent.
   */
  copyFrom?: CopyFrom;
}

/** `x-amz-copy-source` for `from`, naming its version when it has one. */
function copySourceOf(bucket: string, from: CopyFrom): string {
  const base = copySource(bucket, from.key);
  return from.versionId ? `${base}?versionId=${encodeURIComponent(from.versionId)}` : base;
}

/** Bytes of zeros in a SharedArrayBuffer, never written: what the tap sees of a part of zeros. */
let zeroParts: Uint8Array | undefined;
function zeroPart(length: number): Uint8Array {
  if (!zeroParts || zeroParts.byteLength < length) zeroParts = new Uint8Array(new SharedArrayBuffer(length));
  return zeroParts.subarray(0, length);
}

/** Aborts the multipart upload `uploadId` (if one was started), leaving no part behind; never throws. */
async function abandon(client: S3Client, bucket: string, key: string, uploadId: string | undefined) {
  if (uploadId === undefined) return;
  await client
    .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }))
    .catch(() => undefined);
}

/**
 * Streams `body` into one object: a PutObject when it fits one part, otherwise a multipart upload with
 * up to `queueSize` parts in flight. Parts are filled by copying into a fixed pool of `queueSize + 1`
 * buffers that are reused once their upload (and tap) completes, so the memory held is
 * (queueSize + 1) × partSize whatever the body's chunking (more only once parts grow), and nothing is
 * left for the GC. With `zeros`, a part that holds only zeros (chunks of the converter's zero buffer are
 * known as such; others are compared with zeros while the part has nothing else) is never copied into
 * a buffer: storage copies it from an object of zeros, and the tap sees a shared buffer of zeros.
 * On failure the multipart upload is aborted: no part is left behind.
 */
/** Its size, and how many of its bytes storage copied rather than received. */
export async function writeObject(
  body: AsyncIterable<Uint8Array>,
  o: WriteObjectOptions,
): Promise<Required<Written>> {
  if (!(o.partSize >= MIN_PART_SIZE)) throw new RangeError(`part size ${o.partSize} is below S3's 5 MiB`);
  const queueSize = Math.max(1, o.queueSize);
  const { client, bucket, key } = o;
  const controller = new AbortController();
  const onAbort = () => controller.abort(o.signal?.reason);
  if (o.signal?.aborted) onAbort();
  o.signal?.addEventListener("abort", onAbort, { once: true });
  const signal = controller.signal;

  const free: Uint8Array[] = [];
  let allocated = 0;
  const inflight = new Set<Promise<void>>();
  const parts: CompletedPart[] = [];
  let failure: { error: unknown } | undefined;
  let uploadId: string | undefined;
  let partNumber = 0;
  let size = 0;
  let copied = 0;

  const fail = (error: unknown) => {
    failure ??= { error };
    controller.abort(error);
  };
  const check = () => {
    if (failure) throw failure.error;
    signal.throwIfAborted();
  };

  /**
   * A free buffer of `size` bytes: from this write's pool, taken from the process's (`sharedBuffers`) up
   * to queueSize + 1 buffers, or once a part completes. Buffers too small for grown parts go back to the
   * process's pool as they come back.
   */
  const take = async (size: number): Promise<Uint8Array> => {
    for (;;) {
      check();
      const buf = free.pop();
      if (buf && buf.byteLength >= size) return buf.subarray(0, size);
      if (buf) {
        allocated--;
        sharedBuffers.give(buf.buffer as SharedArrayBuffer);
      }
      if (allocated <= queueSize) {
        allocated++;
        return new Uint8Array(sharedBuffers.take(size));
      }
      await Promise.race(inflight);
    }
  };

  /** Sends part `number` of multipart upload `id`; its ETag. */
  const uploadPart = async (number: number, bytes: Uint8Array, id: string | undefined) => {
    const out = await client.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: key,
        UploadId: id,
        PartNumber: number,
        Body: bytes,
        ContentLength: bytes.byteLength,
      }),
      { abortSignal: signal },
    );
    return out.ETag;
  };
  const sendZeroBytes = (number: number, length: number, id: string | undefined) =>
    uploadPart(number, zeroPart(length), id);

  const copier = partCopier(client);
  /**
   * Stores part `number` of upload `id` as `length` bytes at `first` of `source` (an
   * `x-amz-copy-source`), copied inside storage; the ETag storage gave the part.
   */
  const copyPart = (
    number: number,
    source: string,
    first: number,
    length: number,
    id: string | undefined,
    ifMatch?: string,
  ) =>
    copier.copy(
      {
        bucket,
        key,
        uploadId: id,
        partNumber: number,
        source,
        first,
        last: first + length - 1,
        ifMatch,
      },
      signal,
    );

  /** Set once a copy of a run was refused: the rest of the write sends its parts. */
  let runCopyFailed = false;
  const from = o.copyFrom?.versionId || o.copyFrom?.etag ? o.copyFrom : undefined;

  /**
   * Copies part `number` from `from`'s bytes at `offset` (which `bytes` repeat); its ETag. A copy storage
   * refuses (the object was replaced, or the role may not read it) is replaced by `bytes` sent.
   */
  const copyRun = async (
    source: CopyFrom,
    offset: number,
    number: number,
    bytes: Uint8Array,
    id?: string,
  ) => {
    try {
      const ifMatch = source.versionId ? undefined : source.etag;
      const etag = await copyPart(
        number,
        copySourceOf(bucket, source),
        offset,
        bytes.byteLength,
        id,
        ifMatch,
      );
      copied += bytes.byteLength;
      return etag;
    } catch {
      check();
      runCopyFailed = true;
      return uploadPart(number, bytes, id);
    }
  };

  /** Sends the part in `buf` (or copies it from `from` at `offset`, when it is a run stored there). */
  const send = (buf: Uint8Array, length: number, offset: number | undefined): void => {
    const number = ++partNumber;
    const bytes = buf.subarray(0, length);
    let tapped: Promise<void> | undefined;
    try {
      tapped = o.tap?.(bytes);
    } catch (err) {
      fail(err);
      return;
    }
    const stored =
      from && offset !== undefined && !runCopyFailed
        ? copyRun(from, offset, number, bytes, uploadId)
        : uploadPart(number, bytes, uploadId);
    const sent = stored.then((etag) => {
      parts.push({ PartNumber: number, ETag: etag });
    });
    const done: Promise<void> = Promise.all([sent, tapped])
      .then(
        // The whole buffer goes back, whatever part of it this part used.
        () => void free.push(new Uint8Array(buf.buffer)),
        (err: unknown) => fail(err),
      )
      .finally(() => inflight.delete(done));
    inflight.add(done);
  };

  /** Set once a copied part of zeros was not zeros: the rest of the write sends its zeros. */
  let copyFailed = false;

  /**
   * Copies part `number` (`length` bytes of zeros) from an object of zeros; its ETag. A copy whose ETag
   * is not the md5 of zeros is replaced by the zeros sent, and so are this write's next parts of zeros.
   */
  const zeroCopy = async (zeros: ZeroSource, number: number, length: number, id: string | undefined) => {
    const part = { bucket, key, uploadId: id, partNumber: number };
    const etag = await copyZeros(copier, zeros, part, length, signal);
    if (etag === undefined) {
      copyFailed = true;
      return sendZeroBytes(number, length, id);
    }
    copied += length;
    return etag;
  };

  /** Stores the next part, of `length` zeros, by a copy inside storage; the tap sees zeros. */
  const sendZeros = async (zeros: ZeroSource, length: number): Promise<void> => {
    // No buffer bounds these parts: as many in flight as parts sent.
    while (inflight.size > queueSize) {
      await Promise.race(inflight);
      check();
    }
    const number = ++partNumber;
    let tapped: Promise<void> | undefined;
    try {
      tapped = o.tap?.(zeroPart(length));
    } catch (err) {
      fail(err);
      return;
    }
    const sent = (
      copyFailed ? sendZeroBytes(number, length, uploadId) : zeroCopy(zeros, number, length, uploadId)
    ).then((etag) => {
      parts.push({ PartNumber: number, ETag: etag });
    });
    const done: Promise<void> = Promise.all([sent, tapped])
      .then(
        () => undefined,
        (err: unknown) => fail(err),
      )
      .finally(() => inflight.delete(done));
    inflight.add(done);
  };

  // The part being filled: `fill` bytes of `partLength`, in `current` once it holds anything but zeros
  // (without `zeros`, always). Before that, the bytes are zeros and are not copied anywhere.
  let current: Uint8Array | undefined;
  let fill = 0;
  let partLength = 0;
  // Where the part being filled is stored in `from`'s object, while its bytes are one run there.
  let partOffset: number | undefined;
  // Size of the part being filled: that of part partNumber + 1.
  const nextSize = () => partSizeAt(partNumber + 1, o.partSize, o.growAfter, o.growEvery);
  const zeros = o.zeros;
  /** Sends the part filled so far, as a copy of zeros or from its buffer. */
  const flush = async () => {
    if (current) send(current, fill, partOffset);
    else if (zeros) await sendZeros(zeros, fill);
    current = undefined;
    fill = 0;
  };
  /**
   * Before bytes stored at `offset` in `from`'s object (if known) join the part being filled: sizes a
   * new part, or forgets the part's run once they do not continue it.
   */
  const place = (offset: number | undefined) => {
    if (fill === 0) {
      partLength = nextSize();
      partOffset = offset;
    } else if (partOffset !== undefined && offset !== partOffset + fill) {
      partOffset = undefined;
    }
  };
  /** Adds `piece` to the part being filled: copied into its buffer, or only counted while it is zeros. */
  const add = async (piece: Uint8Array) => {
    if (!current && zeros && isZeros(piece)) {
      fill += piece.byteLength;
      return;
    }
    if (!current) {
      current = await take(partLength);
      // The zeros before this piece were not copied; the buffer may hold an earlier part.
      current.fill(0, 0, fill);
    }
    current.set(piece, fill);
    fill += piece.byteLength;
  };
  try {
    for await (const chunk of body) {
      const base = from?.offsetOf(chunk);
      for (let at = 0; at < chunk.byteLength; ) {
        if (fill > 0 && fill === partLength) {
          // A full part and more bytes behind it: the body is multipart.
          // Not abortable: an upload created while the request was being abandoned would be left
          // behind with an id never seen. It is short; the abort is honoured right after.
          uploadId ??= (
            await client.send(
              new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: o.contentType }),
            )
          ).UploadId;
          check();
          await flush();
        }
        place(base === undefined ? undefined : base + at);
        const n = Math.min(chunk.byteLength - at, partLength - fill);
        await add(chunk.subarray(at, at + n));
        at += n;
        size += n;
      }
      check();
    }
    if (uploadId === undefined) {
      // The whole body fits one part.
      const bytes = current ? current.subarray(0, fill) : zeroPart(fill);
      await o.tap?.(bytes);
      check();
      await client.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: key,
          Body: bytes,
          ContentLength: bytes.byteLength,
          ContentType: o.contentType,
        }),
        { abortSignal: signal },
      );
      if (current) free.push(current);
      return { size, copied };
    }
    // The last part, which may be smaller than 5 MiB, copied or sent.
    if (fill > 0) await flush();
    await Promise.all(inflight);
    check();
    parts.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: key,
        UploadId: uploadId,
        MultipartUpload: { Parts: parts },
      }),
      { abortSignal: signal },
    );
    return { size, copied };
  } catch (err) {
    fail(err);
    await Promise.allSettled(inflight);
    await abandon(client, bucket, key, uploadId);
    throw failure?.error ?? err;
  } finally {
    o.signal?.removeEventListener("abort", onAbort);
    // Only buffers whose part was stored and tapped are in `free`: nothing reads them any more.
    for (const buf of free.splice(0)) sharedBuffers.give(buf.buffer as SharedArrayBuffer);
  }
}
