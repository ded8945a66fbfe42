import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListPartsCommand,
  type S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import type { StoredPart } from "../../core/uploads/ports.ts";

/**
 * The multipart calls both kinds of multipart upload make: the clients' (through presigned part links,
 * `multipart.ts`) and the fan-out's (parts written by its workers, `fanout-storage.ts`).
 */

const isNoSuchUpload = (err: unknown) =>
  err instanceof S3ServiceException && (err.name === "NoSuchUpload" || err.$metadata.httpStatusCode === 404);

/** Starts a multipart upload at `key`; its upload id. */
export async function createUpload(client: S3Client, bucket: string, key: string): Promise<string> {
  const out = await client.send(
    new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: "application/octet-stream" }),
  );
  if (!out.UploadId) throw new Error(`storage returned no upload id for ${key}`);
  return out.UploadId;
}

/** The parts stored so far, by part number; undefined when the upload is gone (completed or aborted). */
export async function listUploadParts(
  client: S3Client,
  bucket: string,
  key: string,
  uploadId: string,
): Promise<StoredPart[] | undefined> {
  const parts: StoredPart[] = [];
  try {
    // ListParts returns at most 1000 parts a page; a plan may have 10,000. Not the SDK's paginator: it
    // stops only when no next marker comes back, and MinIO returns one on the last page too (the loop
    // never ends), so the pages are followed while `IsTruncated` says there are more.
    let marker: string | undefined;
    for (;;) {
      const out = await client.send(
        new ListPartsCommand({
          Bucket: bucket,
          Key: key,
          UploadId: uploadId,
          ...(marker !== undefined ? { PartNumberMarker: marker } : {}),
        }),
      );
      for (const p of out.Parts ?? []) {
        if (p.PartNumber === undefined || p.ETag === undefined) continue;
        parts.push({
          partNumber: p.PartNumber,
          size: p.Size ?? 0,
          etag: p.ETag,
          lastModified: p.LastModified?.toISOString(),
        });
      }
      if (!out.IsTruncated || out.NextPartNumberMarker === undefined) break;
      marker = String(out.NextPartNumberMarker);
    }
  } catch (err) {
    if (isNoSuchUpload(err)) return undefined;
    throw err;
  }
  return parts.sort((a, b) => a.partNumber - b.partNumber);
}

/** Assembles the object from `parts`, in part-number order. */
export async function completeUpload(
  client: S3Client,
  bucket: string,
  key: string,
  uploadId: string,
  parts: readonly { partNumber: number; etag: string }[],
): Promise<void> {
  await client.send(
    new CompleteMultipartUploadCommand({
      Bucket: bucket,
      Key: key,
      UploadId: uploadId,
      MultipartUpload: {
        Parts: [...parts]
          .sort((a, b) => a.partNumber - b.partNumber)
          .map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })),
      },
    }),
  );
}

/** Aborts the upload; one already gone is no error. */
export async function abortUpload(
  client: S3Client,
  bucket: string,
  key: string,
  uploadId: string,
): Promise<void> {
  try {
    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }));
  } catch (err) {
    if (!isNoSuchUpload(err)) throw err;
  }
}
