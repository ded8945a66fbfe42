import { createHash } from "node:crypto";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  PutObjectCommand,
  type S3Client,
  S3ServiceException,
  UploadPartCopyCommand,
} from "@aws-sdk/client-s3";
import { MAX_PART_SIZE, MIB } from "../../core/uploads/plan.ts";

/** Where the objects of zeros live: no lifecycle expires them and no sweep deletes them. */
export const ZERO_PREFIX = "zeros/";

/** The smallest object of zeros: sent once, in one PutObject; the larger ones are copies of it. */
export const ZERO_BASE = 8 * MIB;

/**
 * Size of the object of zeros a part of `length` bytes is copied from: the base doubled as often as
 * needed, at most S3's largest part (5 GiB). Few sizes, so few objects, whatever the part sizes.
 */
export function zeroObjectSize(length: number): number {
  if (!(length > 0 && length <= MAX_PART_SIZE)) throw new RangeError(`part of ${length} bytes`);
  let size = ZERO_BASE;
  while (size < length) size *= 2;
  return Math.min(size, MAX_PART_SIZE);
}

/** Where a part of zeros comes from: an object of at least its length. */
export interface ZeroSource {
  /**
   * The key of an object of zeros of at least `length` bytes in the write's bucket, made on first need.
   * Not abortable: writers share it, and making it is short.
   */
  objectFor(length: number): Promise<string>;
  /**
   * The object `made` (what `objectFor(length)` gave) was not found: the next need makes sure of it
   * again. Writers that all found it missing make sure of it once.
   */
  forget(length: number, made: Promise<string>): void;
}

/** Not there; or not known, to a role without `s3:ListBucket`, which storage answers 403 for a missing key. */
const isMissing = (err: unknown) =>
  err instanceof S3ServiceException &&
  (err.$metadata.httpStatusCode === 404 ||
    err.$metadata.httpStatusCode === 403 ||
    err.name === "NotFound" ||
    err.name === "NoSuchKey");

/**
 * Objects of zeros under `prefix` in `bucket`, one per size (`zeros/<bytes>`), each checked (HEAD) or
 * made once per process. Making one is idempotent: two writers that race write the same bytes to the
 * same key, and either version serves. The base is one PutObject of 8 MiB; a larger one is a multipart
 * upload of copies of the next smaller one (UploadPartCopy), so no byte of it is sent.
 */
export class ZeroObjects implements ZeroSource {
  private readonly made = new Map<number, Promise<string>>();

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly prefix = ZERO_PREFIX,
  ) {}

  objectFor(length: number): Promise<string> {
    const size = zeroObjectSize(length);
    let key = this.made.get(size);
    if (!key) {
      key = this.ensure(size);
      this.made.set(size, key);
      // A failure is the caller's to see; the next need tries again.
      const made = key;
      key.catch(() => this.forget(size, made));
    }
    return key;
  }

  forget(length: number, made: Promise<string>): void {
    const size = zeroObjectSize(length);
    if (this.made.get(size) === made) this.made.delete(size);
  }

  private async ensure(size: number): Promise<string> {
    const key = `${this.prefix}${size}`;
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      if (head.ContentLength === size) return key;
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
    if (size <= ZERO_BASE) {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: new Uint8Array(size),
          ContentLength: size,
          ContentType: "application/octet-stream",
        }),
      );
      return key;
    }
    const from = await this.objectFor(size / 2);
    await this.copyParts(key, size, from, zeroObjectSize(size / 2));
    return key;
  }

  /** `size` bytes at `key`, in parts copied from `from` (`fromSize` bytes of zeros). */
  private async copyParts(key: string, size: number, from: string, fromSize: number): Promise<void> {
    const { client, bucket } = this;
    const { UploadId } = await client.send(
      new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: "application/octet-stream" }),
    );
    try {
      const parts = [];
      for (let at = 0, n = 1; at < size; at += fromSize, n++) {
        const length = Math.min(fromSize, size - at);
        const out = await client.send(
          new UploadPartCopyCommand({
            Bucket: bucket,
            Key: key,
            UploadId,
            PartNumber: n,
            CopySource: `${bucket}/${from}`,
            CopySourceRange: `bytes=0-${length - 1}`,
          }),
        );
        parts.push({ PartNumber: n, ETag: out.CopyPartResult?.ETag });
      }
      await client.send(
        new CompleteMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          UploadId,
          MultipartUpload: { Parts: parts },
        }),
      );
    } catch (err) {
      await client
        .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId }))
        .catch(() => undefined);
      throw err;
    }
  }
}

/** Zeros hashed in blocks of 1 MiB: the md5 of a part of zeros without a buffer of its size. */
let zeroBlock: Uint8Array | undefined;

/** The ETag storage gives a part of `length` zeros (the md5 of its bytes), by length, computed once each. */
const zeroEtags = new Map<number, string>();
export function zeroEtag(length: number): string {
  let etag = zeroEtags.get(length);
  if (!etag) {
    const md5 = createHash("md5");
    zeroBlock ??= new Uint8Array(1024 * 1024);
    for (let left = length; left > 0; left -= zeroBlock.byteLength) {
      md5.update(zeroBlock.subarray(0, Math.min(left, zeroBlock.byteLength)));
    }
    etag = md5.digest("hex");
    zeroEtags.set(length, etag);
  }
  return etag;
}
