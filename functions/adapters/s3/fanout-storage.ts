import type { Readable } from "node:stream";
import { GetObjectCommand, type S3Client, UploadPartCommand } from "@aws-sdk/client-s3";
import type { FanoutStorage, ListedPart } from "../../core/fanout/ports.ts";
import { asChanged, copySource } from "./copy.ts";
import { abortUpload, completeUpload, createUpload, listUploadParts } from "./multipart-calls.ts";
import { copyZeros, partCopier } from "./part-copy.ts";
import type { ZeroSource } from "./zero-object.ts";

/**
 * The stored image's multipart upload as the fan-out writes it: from several invocations, part by part
 * (S3 or MinIO). Reads of the upload are ranged GETs, conditional on its ETag. With `zeros`, parts of
 * zeros are copied from objects of zeros in the same bucket (`zeros/<bytes>`, made on first need).
 */
export class S3FanoutStorage implements FanoutStorage {
  readonly copyZeros?: FanoutStorage["copyZeros"];

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    zeros?: ZeroSource,
  ) {
    if (zeros)
      this.copyZeros = (key, uploadId, n, length, signal) =>
        this.zeroCopy(zeros, key, uploadId, n, length, signal);
  }

  /** UploadPartCopy of `length` zeros as part `partNumber`; whether its ETag is the md5 of those zeros. */
  private async zeroCopy(
    zeros: ZeroSource,
    key: string,
    uploadId: string,
    partNumber: number,
    length: number,
    signal?: AbortSignal,
  ): Promise<boolean> {
    const part = { bucket: this.bucket, key, uploadId, partNumber };
    return (await copyZeros(partCopier(this.client), zeros, part, length, signal)) !== undefined;
  }

  create(key: string): Promise<string> {
    return createUpload(this.client, this.bucket, key);
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
      await partCopier(this.client).copy(
        {
          bucket: this.bucket,
          key,
          uploadId,
          partNumber,
          source: copySource(this.bucket, from.key),
          first: from.first,
          last: from.last,
          ifMatch: from.ifMatch,
        },
        signal,
      );
    } catch (err) {
      throw asChanged(err, from.key);
    }
  }

  listParts(key: string, uploadId: string): Promise<ListedPart[] | undefined> {
    return listUploadParts(this.client, this.bucket, key, uploadId);
  }

  complete(key: string, uploadId: string, parts: readonly ListedPart[]): Promise<void> {
    return completeUpload(this.client, this.bucket, key, uploadId, parts);
  }

  abort(key: string, uploadId: string): Promise<void> {
    return abortUpload(this.client, this.bucket, key, uploadId);
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
