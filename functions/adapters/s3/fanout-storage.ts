import type { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListPartsCommand,
  type S3Client,
  S3ServiceException,
  UploadPartCommand,
  UploadPartCopyCommand,
} from "@aws-sdk/client-s3";
import type { FanoutStorage, ListedPart } from "../../core/fanout/ports.ts";
import { asChanged } from "./copy.ts";

const isNoSuchUpload = (err: unknown) =>
  err instanceof S3ServiceException && (err.name === "NoSuchUpload" || err.$metadata.httpStatusCode === 404);

/** `x-amz-copy-source`: the bucket and the URL-encoded key. */
const copySource = (bucket: string, key: string) =>
  `${bucket}/${key.split("/").map(encodeURIComponent).join("/")}`;

/**
 * The stored image's multipart upload as the fan-out writes it: from several invocations, part by part
 * (S3 or MinIO). Reads of the upload are ranged GETs, conditional on its ETag.
 */
export class S3FanoutStorage implements FanoutStorage {
  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
  ) {}

  async create(key: string): Promise<string> {
    const out = await this.client.send(
      new CreateMultipartUploadCommand({
        Bucket: this.bucket,
        Key: key,
        ContentType: "application/octet-stream",
      }),
    );
    if (!out.UploadId) throw new Error(`storage started no multipart upload at ${key}`);
    return out.UploadId;
  }

  async uploadPart(
    key: string,
    uploadId: string,
    partNumber: number,
    body: Uint8Array,
    signal?: AbortSignal,
  ): Promise<void> {
    await this.client.send(
      new UploadPartCommand({
        Bucket: this.bucket,
        Key: key,
        UploadId: uploadId,
        PartNumber: partNumber,
        Body: body,
        ContentLength: body.byteLength,
      }),
      { abortSignal: signal },
    );
  }

  async copyPart(
    key: string,
    uploadId: string,
    partNumber: number,
    from: { key: string; first: number; last: number; ifMatch?: string | undefined },
    signal?: AbortSignal,
  ): Promise<void> {
    try {
      await this.client.send(
        new UploadPartCopyCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId: uploadId,
          PartNumber: partNumber,
          CopySource: copySource(this.bucket, from.key),
          CopySourceRange: `bytes=${from.first}-${from.last}`,
          ...(from.ifMatch ? { CopySourceIfMatch: from.ifMatch } : {}),
        }),
        { abortSignal: signal },
      );
    } catch (err) {
      throw asChanged(err, from.key);
    }
  }

  async listParts(key: string, uploadId: string): Promise<ListedPart[] | undefined> {
    const parts: ListedPart[] = [];
    try {
      // Pages followed while IsTruncated (MinIO returns a next marker on the last page too).
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
          parts.push({ partNumber: p.PartNumber, size: p.Size ?? 0, etag: p.ETag });
        }
        if (!out.IsTruncated || out.NextPartNumberMarker === undefined) break;
        marker = String(out.NextPartNumberMarker);
      }
    } catch (err) {
      if (isNoSuchUpload(err)) return undefined;
      throw err;
    }
    return parts;
  }

  async complete(key: string, uploadId: string, parts: readonly ListedPart[]): Promise<void> {
    await this.client.send(
      new CompleteMultipartUploadCommand({
        Bucket: this.bucket,
        Key: key,
        UploadId: uploadId,
        MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) },
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

  async *readRange(
    key: string,
    offset: number,
    length: number,
    options: { ifMatch?: string | undefined; signal?: AbortSignal | undefined } = {},
  ): AsyncIterable<Uint8Array> {
    if (length === 0) return;
    const out = await this.client
      .send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Range: `bytes=${offset}-${offset + length - 1}`,
          ...(options.ifMatch ? { IfMatch: options.ifMatch } : {}),
        }),
        { abortSignal: options.signal },
      )
      .catch((err: unknown) => {
        throw asChanged(err, key);
      });
    if (!out.Body) return;
    yield* out.Body as Readable;
  }
}
