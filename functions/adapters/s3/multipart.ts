import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListPartsCommand,
  paginateListObjectsV2,
  type S3Client,
  S3ServiceException,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import type { PresignedRequest } from "../../core/ports.ts";
import type { ListedObject, MultipartUploads, PendingUpload, StoredPart } from "../../core/uploads/ports.ts";
import { createS3Client, listMultipartUploads } from "./object-store.ts";

export interface S3MultipartOptions {
  bucket: string;
  region: string;
  endpoint?: string | undefined;
  /** Endpoint written into presigned part links, when clients reach storage by another address. */
  publicEndpoint?: string | undefined;
}

const isNoSuchUpload = (err: unknown) =>
  err instanceof S3ServiceException && (err.name === "NoSuchUpload" || err.$metadata.httpStatusCode === 404);

const iso = (d: Date | undefined) => d?.toISOString();

/** S3 (and MinIO) multipart uploads filled by clients through presigned `UploadPart` links. */
export class S3MultipartUploads implements MultipartUploads {
  private readonly client: S3Client;
  private readonly presigner: S3Client;
  private readonly bucket: string;

  constructor(options: S3MultipartOptions, client?: S3Client) {
    this.bucket = options.bucket;
    this.client = client ?? createS3Client(options.region, options.endpoint);
    this.presigner = options.publicEndpoint
      ? createS3Client(options.region, options.publicEndpoint)
      : this.client;
  }

  async create(key: string): Promise<string> {
    const out = await this.client.send(
      new CreateMultipartUploadCommand({
        Bucket: this.bucket,
        Key: key,
        ContentType: "application/octet-stream",
      }),
    );
    if (!out.UploadId) throw new Error(`storage returned no upload id for ${key}`);
    return out.UploadId;
  }

  async presignPart(
    key: string,
    uploadId: string,
    partNumber: number,
    options: { expiresInSeconds: number; contentLength: number },
  ): Promise<PresignedRequest> {
    const command = new UploadPartCommand({
      Bucket: this.bucket,
      Key: key,
      UploadId: uploadId,
      PartNumber: partNumber,
      ContentLength: options.contentLength,
    });
    const url = await getSignedUrl(this.presigner, command, {
      expiresIn: options.expiresInSeconds,
      // Signing the length makes storage refuse a part of any other size.
      signableHeaders: new Set(["content-length"]),
    });
    return {
      method: "PUT",
      url,
      headers: { "Content-Length": String(options.contentLength) },
      expiresAt: new Date(Date.now() + options.expiresInSeconds * 1000).toISOString(),
    };
  }

  async listParts(key: string, uploadId: string): Promise<StoredPart[] | undefined> {
    const parts: StoredPart[] = [];
    try {
      // ListParts returns at most 1000 parts a page; a plan may have 10,000. Not the SDK's paginator: it
      // stops only when no next marker comes back, and MinIO returns one on the last page too (the loop
      // never ends), so the pages are followed while `IsTruncated` says there are more.
      let marker: string | undefined;
      for (;;) {
        const out = await this.client.send(
          new ListPartsCommand({
            Bucket: this.bucket,
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
            lastModified: iso(p.LastModified),
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

  async complete(
    key: string,
    uploadId: string,
    parts: readonly { partNumber: number; etag: string }[],
  ): Promise<void> {
    await this.client.send(
      new CompleteMultipartUploadCommand({
        Bucket: this.bucket,
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

  async abort(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(
        new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }),
      );
    } catch (err) {
      if (!isNoSuchUpload(err)) throw err;
    }
  }

  async listPending(prefix: string): Promise<PendingUpload[]> {
    return (await listMultipartUploads(this.client, this.bucket, prefix)).map((u) => ({
      key: u.key,
      uploadId: u.uploadId,
      initiated: iso(u.initiated),
    }));
  }

  async listObjects(prefix: string): Promise<ListedObject[]> {
    const found: ListedObject[] = [];
    const pages = paginateListObjectsV2({ client: this.client }, { Bucket: this.bucket, Prefix: prefix });
    for await (const page of pages) {
      for (const o of page.Contents ?? []) {
        if (o.Key) found.push({ key: o.Key, size: o.Size ?? 0, lastModified: iso(o.LastModified) });
      }
    }
    return found;
  }
}
