import {
  AbortMultipartUploadCommand,
  type CompletedPart,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { MAX_PART_SIZE, MIN_PART_SIZE } from "../../core/uploads/plan.ts";

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
}

/**
 * Streams `body` into one object: a PutObject when it fits one part, otherwise a multipart upload with
 * up to `queueSize` parts in flight. Parts are filled by copying into a fixed pool of `queueSize + 1`
 * buffers that are reused once their upload (and tap) completes, so the memory held is
 * (queueSize + 1) × partSize whatever the body's chunking (more only once parts grow), and nothing is
 * left for the GC.
 * On failure the multipart upload is aborted: no part is left behind.
 */
export async function writeObject(
  body: AsyncIterable<Uint8Array>,
  o: WriteObjectOptions,
): Promise<{ size: number }> {
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

  const fail = (error: unknown) => {
    failure ??= { error };
    controller.abort(error);
  };
  const check = () => {
    if (failure) throw failure.error;
    signal.throwIfAborted();
  };

  /**
   * A free buffer of `size` bytes: from the pool, newly allocated up to queueSize + 1 buffers, or once
   * a part completes. Buffers too small for grown parts are dropped as they come back.
   */
  const take = async (size: number): Promise<Uint8Array> => {
    for (;;) {
      check();
      const buf = free.pop();
      if (buf && buf.byteLength >= size) return buf.subarray(0, size);
      if (buf) allocated--;
      if (allocated <= queueSize) {
        allocated++;
        return new Uint8Array(new SharedArrayBuffer(size));
      }
      await Promise.race(inflight);
    }
  };

  const send = (buf: Uint8Array, length: number): void => {
    const number = ++partNumber;
    const bytes = buf.subarray(0, length);
    let tapped: Promise<void> | undefined;
    try {
      tapped = o.tap?.(bytes);
    } catch (err) {
      fail(err);
      return;
    }
    const id = uploadId;
    const sent = client
      .send(
        new UploadPartCommand({
          Bucket: bucket,
          Key: key,
          UploadId: id,
          PartNumber: number,
          Body: bytes,
          ContentLength: length,
        }),
        { abortSignal: signal },
      )
      .then((out) => {
        parts.push({ PartNumber: number, ETag: out.ETag });
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

  let current: Uint8Array | undefined;
  let fill = 0;
  // Size of the part being filled: that of part partNumber + 1.
  const nextSize = () => partSizeAt(partNumber + 1, o.partSize, o.growAfter, o.growEvery);
  try {
    for await (const chunk of body) {
      for (let at = 0; at < chunk.byteLength; ) {
        if (current && fill === current.byteLength) {
          // A full part and more bytes behind it: the body is multipart.
          // Not abortable: an upload created while the request was being abandoned would be left
          // behind with an id never seen. It is short; the abort is honoured right after.
          uploadId ??= (
            await client.send(
              new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: o.contentType }),
            )
          ).UploadId;
          check();
          send(current, fill);
          current = undefined;
          fill = 0;
        }
        current ??= await take(nextSize());
        const n = Math.min(chunk.byteLength - at, current.byteLength - fill);
        current.set(chunk.subarray(at, at + n), fill);
        fill += n;
        at += n;
        size += n;
      }
      check();
    }
    if (uploadId === undefined) {
      // The whole body fits one part.
      const bytes = current ? current.subarray(0, fill) : new Uint8Array(0);
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
      return { size };
    }
    if (current && fill > 0) send(current, fill);
    current = undefined;
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
    return { size };
  } catch (err) {
    fail(err);
    await Promise.allSettled(inflight);
    if (uploadId !== undefined) {
      await client
        .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }))
        .catch(() => undefined);
    }
    throw failure?.error ?? err;
  } finally {
    o.signal?.removeEventListener("abort", onAbort);
  }
}
