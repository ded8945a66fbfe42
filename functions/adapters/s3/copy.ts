import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  type S3Client,
  S3ServiceException,
  UploadPartCopyCommand,
} from "@aws-sdk/client-s3";
import { ObjectChangedError } from "../../core/ports.ts";
import { MAX_PART_SIZE, MAX_PARTS, MAX_SINGLE_PUT, MIB } from "../../core/uploads/plan.ts";

/** Ranges of a multipart copy: few requests, each a server-side copy of its range. */
const COPY_PART_SIZE = 512 * MIB;
/** Part copies in flight at once. */
const COPY_QUEUE = 4;

/** One part of a multipart copy: its number and the inclusive byte range of the source it copies. */
export interface CopyPart {
  partNumber: number;
  first: number;
  last: number;
}

/**
 * How an object of `size` bytes is copied: undefined when one CopyObject can (S3 copies at most 5 GiB
 * in one request), else the parts of a multipart copy, each at most 5 GiB, all but the last the same
 * size, at most 10,000 of them, together covering every byte once.
 */
export function copyParts(
  size: number,
  partSize = COPY_PART_SIZE,
  singleUpTo = MAX_SINGLE_PUT,
): CopyPart[] | undefined {
  if (size <= singleUpTo) return undefined;
  const each = Math.min(MAX_PART_SIZE, Math.max(partSize, Math.ceil(size / MAX_PARTS / MIB) * MIB));
  const parts: CopyPart[] = [];
  for (let first = 0; first < size; first += each) {
    parts.push({ partNumber: parts.length + 1, first, last: Math.min(size, first + each) - 1 });
  }
  return parts;
}

export interface CopyRequest {
  client: S3Client;
  bucket: string;
  from: string;
  to: string;
  size: number;
  ifMatch?: string | undefined;
  signal?: AbortSignal | undefined;
  /** The parts of a multipart copy, when not `copyParts(size)` (tests copy small objects in parts). */
  parts?: CopyPart[] | undefined;
}

/** `x-amz-copy-source`: the bucket and the URL-encoded key. */
export const copySource = (bucket: string, key: string) =>
  `${bucket}/${key.split("/").map(encodeURIComponent).join("/")}`;

const changed = (err: unknown) =>
  err instanceof S3ServiceException &&
  (err.$metadata.httpStatusCode === 412 || err.name === "PreconditionFailed");

/** A storage precondition failure as the port's `ObjectChangedError`; anything else unchanged. */
export function asChanged(err: unknown, key: string): unknown {
  return changed(err)
    ? new ObjectChangedError(`the object at ${key} was replaced since it was read`, { cause: err })
    : err;
}

/** Copies `from` to `to` inside storage (see `ObjectStore.copy`). */
export async function copyObject(req: CopyRequest): Promise<{ size: number }> {
  const parts = req.parts ?? copyParts(req.size);
  try {
    if (parts === undefined) {
      await req.client.send(
        new CopyObjectCommand({
          Bucket: req.bucket,
          Key: req.to,
          CopySource: copySource(req.bucket, req.from),
          ...(req.ifMatch ? { CopySourceIfMatch: req.ifMatch } : {}),
          ContentType: "application/octet-stream",
          MetadataDirective: "REPLACE",
        }),
        { abortSignal: req.signal },
      );
    } else {
      await multipartCopy(req, parts);
    }
  } catch (err) {
    throw asChanged(err, req.from);
  }
  return { size: req.size };
}

async function multipartCopy(req: CopyRequest, parts: CopyPart[]): Promise<void> {
  const { client, bucket, to, signal } = req;
  const created = await client.send(
    new CreateMultipartUploadCommand({ Bucket: bucket, Key: to, ContentType: "application/octet-stream" }),
    { abortSignal: signal },
  );
  const uploadId = created.UploadId;
  if (!uploadId) throw new Error(`storage started no multipart copy to ${to}`);
  try {
    const etags: string[] = [];
    let next = 0;
    const worker = async () => {
      for (let part = parts[next++]; part !== undefined; part = parts[next++]) {
        signal?.throwIfAborted();
        const out = await client.send(
          new UploadPartCopyCommand({
            Bucket: bucket,
            Key: to,
            UploadId: uploadId,
            PartNumber: part.partNumber,
            CopySource: copySource(bucket, req.from),
            CopySourceRange: `bytes=${part.first}-${part.last}`,
            ...(req.ifMatch ? { CopySourceIfMatch: req.ifMatch } : {}),
          }),
          { abortSignal: signal },
        );
        const etag = out.CopyPartResult?.ETag;
        if (!etag) throw new Error(`storage gave no ETag for part ${part.partNumber} of ${to}`);
        etags[part.partNumber - 1] = etag;
      }
    };
    await Promise.all(Array.from({ length: Math.min(COPY_QUEUE, parts.length) }, worker));
    signal?.throwIfAborted();
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: to,
        UploadId: uploadId,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    );
  } catch (err) {
    await client
      .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: to, UploadId: uploadId }))
      .catch(() => undefined);
    throw err;
  }
}
