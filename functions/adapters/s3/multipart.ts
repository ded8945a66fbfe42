import { paginateListObjectsV2, type S3Client, UploadPartCommand } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import type { PresignedRequest } from "../../core/ports.ts";
import type { ListedObject, MultipartUploads, PendingUpload, StoredPart } from "../../core/uploads/ports.ts";
import { abortUpload, completeUpload, createUpload, listUploadParts } from "./multipart-calls.ts";
import { createS3Client, listMultipartUploads } from "./object-store.ts";

export interface S3MultipartOptions {
  bucket: string;
  region: string;
  endpoint?: string | undefined;
  /** Endpoint written into presigned part links, when clients reach storage by another address. */
  publicEndpoint?: string | undefined;
}

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

  create(key: string): Promise<string> {
    return createUpload(this.client, this.bucket, key);
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

  listParts(key: string, uploadId: string): Promise<StoredPart[] | undefined> {
    return listUploadParts(this.client, this.bucket, key, uploadId);
  }

  complete(
    key: string,
    uploadId: string,
    parts: readonly { partNumber: number; etag: string }[],
  ): Promise<void> {
    return completeUpload(this.client, this.bucket, key, uploadId, parts);
  }

  abort(key: string, uploadId: string): Promise<void> {
    return abortUpload(this.client, this.bucket, key, uploadId);
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
