import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  NotFound,
  paginateListObjectsV2,
  S3Client,
  type S3ClientConfig,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import type {
  CopyOptions,
  ListedVersion,
  ObjectInfo,
  ObjectRead,
  ObjectStore,
  PendingWrite,
  PresignedRequest,
  ReadOptions,
  WriteOptions,
  Written,
} from "../../core/ports.ts";
import { MAX_PART_SIZE, MIB } from "../../core/uploads/plan.ts";
import { asChanged, copyObject } from "./copy.ts";
import { readObject } from "./object-reader.ts";
import { writeObject } from "./part-writer.ts";
import { PutLinkSigner } from "./put-link.ts";
import { ZeroObjects } from "./zero-object.ts";

export interface S3StoreOptions {
  bucket: string;
  region: string;
  /** Set for MinIO; path-style addressing follows. */
  endpoint?: string | undefined;
  /** Endpoint written into presigned links, when clients reach storage by another address. */
  publicEndpoint?: string | undefined;
  partSize: number;
  /** Parts uploaded in parallel; memory held is about (queueSize + 1) × partSize. */
  queueSize?: number;
  /**
   * Parts of zeros copied inside storage from an object of zeros under `zeros/` rather than sent
   * (default true).
   */
  copyZeroParts?: boolean;
  /**
   * Whole-object reads through the SDK's own HTTP handler (`node:http`) instead of a socket of their own
   * (object-reader.ts): for comparisons.
   */
  sdkReads?: boolean;
}

/** S3 clients configured the way Hangar's links need: no flexible-checksum query parameters in URLs. */
export function createS3Client(
  region: string,
  endpoint?: string,
  extra: Pick<S3ClientConfig, "expectContinueHeader"> = {},
): S3Client {
  return contentMd5ForDeletes(
    new S3Client({
      region,
      ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
      // The SDK otherwise adds x-amz-checksum-* parameters to presigned PUTs, which clients cannot satisfy.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      ...extra,
    }),
  );
}

/**
 * Adds `Content-MD5` to `DeleteObjects` requests. Storage requires an integrity header on that call; the SDK
 * now sends only a CRC32 flexible checksum, which MinIO (RELEASE.2024-01-01) does not accept there
 * (`MissingContentMD5`). S3 accepts both headers together, so one client works against either. The header
 * is added before signing, so it is signed like the rest.
 */
export function contentMd5ForDeletes(client: S3Client): S3Client {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers?: Record<string, string>; body?: unknown };
      if (context.commandName === "DeleteObjectsCommand" && request.headers) {
        const body = request.body;
        if (typeof body === "string" || body instanceof Uint8Array) {
          request.headers["content-md5"] = createHash("md5").update(body).digest("base64");
        }
      }
      return next(args);
    },
    { step: "build", name: "hangarContentMd5ForDeletes" },
  );
  return client;
}

/** A multipart upload in progress, as storage lists it. */
export interface ListedUpload {
  key: string;
  uploadId: string;
  initiated: Date | undefined;
}

/**
 * Every multipart upload in progress under `prefix`, page by page. S3 lists them by prefix; MinIO only for
 * a whole key, so callers that must find MinIO's ask for known keys. The SDK has no paginator for this
 * listing (its pages carry two markers, key and upload id), hence the loop; `pageSize` (S3's `MaxUploads`,
 * 1000 by default) is for tests.
 */
export async function* multipartUploadPages(
  client: S3Client,
  bucket: string,
  prefix: string,
  pageSize?: number,
): AsyncIterable<ListedUpload[]> {
  let markers: { KeyMarker?: string; UploadIdMarker?: string } = {};
  for (;;) {
    const out = await client.send(
      new ListMultipartUploadsCommand({
        Bucket: bucket,
        Prefix: prefix,
        ...markers,
        ...(pageSize !== undefined ? { MaxUploads: pageSize } : {}),
      }),
    );
    yield (out.Uploads ?? []).flatMap((u) =>
      u.Key?.startsWith(prefix) && u.UploadId
        ? [{ key: u.Key, uploadId: u.UploadId, initiated: u.Initiated }]
        : [],
    );
    if (!out.IsTruncated || out.NextKeyMarker === undefined) return;
    markers = {
      KeyMarker: out.NextKeyMarker,
      ...(out.NextUploadIdMarker !== undefined ? { UploadIdMarker: out.NextUploadIdMarker } : {}),
    };
  }
}

/** Every multipart upload in progress under `prefix` (see `multipartUploadPages`). */
export async function listMultipartUploads(
  client: S3Client,
  bucket: string,
  prefix: string,
  pageSize?: number,
): Promise<ListedUpload[]> {
  const found: ListedUpload[] = [];
  for await (const page of multipartUploadPages(client, bucket, prefix, pageSize)) found.push(...page);
  return found;
}

/**
 * Sends part and object bodies as `UNSIGNED-PAYLOAD`: the SDK otherwise hashes every part with SHA-256 for
 * the signature (and MinIO verifies it), a second full hash of the image on top of Hangar's own md5 and
 * sha512 (measured: 1.6× faster multipart writes). The request itself stays signed; TLS and
 * the image's own digests cover the bytes. Only for the writing client: presigned links are unaffected.
 */
function unsignedPayloads(client: S3Client): S3Client {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers?: Record<string, string> };
      if (
        (context.commandName === "UploadPartCommand" || context.commandName === "PutObjectCommand") &&
        request.headers
      ) {
        request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
      }
      return next(args);
    },
    { step: "build", name: "hangarUnsignedPayload" },
  );
  return client;
}

/**
 * The client Hangar writes stored images with: payloads sent unsigned (see `unsignedPayloads`), and no
 * `Expect: 100-continue`. The SDK sends that header with every body of 2 MiB or more, and each such
 * request then goes out on a connection of its own, opened for it and closed after it (its handler's
 * rule): a new TCP connection, and over https a new TLS handshake, for every part (measured locally:
 * 130 connections per GiB imported). Without it parts reuse the client's kept-alive connections; all
 * the header would save is sending a part that storage refuses before reading it.
 */
export function createWriterClient(region: string, endpoint?: string): S3Client {
  return unsignedPayloads(createS3Client(region, endpoint, { expectContinueHeader: false }));
}

/** Parts of Hangar's own multipart write of a stored image of about `hint` bytes: the configured size, larger when 9,000 of them (S3 allows 10,000,
 * kept in reserve for an output a little larger than hinted) would not hold it; at most S3's 5 GiB. */
export function storedImagePartSize(hint: number | undefined, configured: number): number {
  if (!hint || hint <= 0) return configured;
  return Math.min(MAX_PART_SIZE, Math.max(configured, Math.ceil(hint / 9000 / MIB) * MIB));
}

/**
 * Every version and delete marker under `prefix`, page by page (S3 and MinIO list them by prefix). A bucket
 * that never kept versions lists each object once, as version `null`. The SDK has no paginator for this
 * listing (two markers, key and version id), hence the loop.
 */
async function* objectVersionPages(
  client: S3Client,
  bucket: string,
  prefix: string,
  pageSize?: number,
): AsyncIterable<ListedVersion[]> {
  let markers: { KeyMarker?: string; VersionIdMarker?: string } = {};
  for (;;) {
    const out = await client.send(
      new ListObjectVersionsCommand({
        Bucket: bucket,
        Prefix: prefix,
        ...markers,
        ...(pageSize !== undefined ? { MaxKeys: pageSize } : {}),
      }),
    );
    const entries = [
      ...(out.Versions ?? []).map((v) => ({ v, deleteMarker: false })),
      ...(out.DeleteMarkers ?? []).map((v) => ({ v, deleteMarker: true })),
    ];
    yield entries.flatMap(({ v, deleteMarker }) =>
      v.Key && v.VersionId
        ? [{ key: v.Key, versionId: v.VersionId, lastModified: v.LastModified?.toISOString(), deleteMarker }]
        : [],
    );
    if (!out.IsTruncated || out.NextKeyMarker === undefined) return;
    markers = {
      KeyMarker: out.NextKeyMarker,
      ...(out.NextVersionIdMarker !== undefined ? { VersionIdMarker: out.NextVersionIdMarker } : {}),
    };
  }
}

const isNotFound = (err: unknown) =>
  err instanceof NotFound ||
  (err instanceof S3ServiceException && (err.$metadata.httpStatusCode === 404 || err.name === "NoSuchKey"));

export class S3ObjectStore implements ObjectStore {
  private readonly client: S3Client;
  private readonly presigner: S3Client;
  private readonly putLinks: PutLinkSigner;
  /** Writes the stored image; its part bodies are not hashed for the signature (see `unsignedPayloads`). */
  private readonly writer: S3Client;
  private readonly bucket: string;
  /** What parts of zeros are copied from (`zeros/`), made on first need and then known to the process. */
  private readonly zeros: ZeroObjects | undefined;

  constructor(
    private readonly options: S3StoreOptions,
    client?: S3Client,
  ) {
    this.bucket = options.bucket;
    this.client = client ?? createS3Client(options.region, options.endpoint);
    this.presigner = options.publicEndpoint
      ? createS3Client(options.region, options.publicEndpoint)
      : this.client;
    this.putLinks = new PutLinkSigner(this.presigner);
    // Its own client, so the middleware never reaches the one that signs links.
    this.writer = createWriterClient(options.region, options.endpoint);
    this.zeros = options.copyZeroParts === false ? undefined : new ZeroObjects(this.writer, this.bucket);
  }

  async presignPut(
    key: string,
    options: { expiresInSeconds: number; contentLength?: number },
  ): Promise<PresignedRequest> {
    // The URL getSignedUrl gives for a PutObjectCommand, signed with a key derived once (put-link.ts).
    const url = await this.putLinks.presign(this.bucket, key, options);
    const headers: Record<string, string> = {};
    if (options.contentLength !== undefined) headers["Content-Length"] = String(options.contentLength);
    return { method: "PUT", url, headers, expiresAt: expiry(options.expiresInSeconds) };
  }

  async presignGet(
    key: string,
    options: { expiresInSeconds: number; filename?: string; versionId?: string },
  ): Promise<PresignedRequest> {
    const url = await getSignedUrl(
      this.presigner,
      new GetObjectCommand({
        Bucket: this.bucket,
        Key: key,
        ...(options.versionId ? { VersionId: options.versionId } : {}),
        // glanceclient reads the body only when the type is exactly this.
        ResponseContentType: "application/octet-stream",
        ...(options.filename
          ? { ResponseContentDisposition: `attachment; filename="${options.filename}"` }
          : {}),
      }),
      { expiresIn: options.expiresInSeconds },
    );
    return { method: "GET", url, headers: {}, expiresAt: expiry(options.expiresInSeconds) };
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      // A bucket that never kept versions says `null` (or nothing): no version to name.
      const versionId = out.VersionId && out.VersionId !== "null" ? out.VersionId : undefined;
      return { size: out.ContentLength ?? 0, etag: out.ETag, ...(versionId ? { versionId } : {}) };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  read(key: string, signal?: AbortSignal, options: ReadOptions = {}): ObjectRead {
    const input = {
      Bucket: this.bucket,
      Key: key,
      ...(options.ifMatch ? { IfMatch: options.ifMatch } : {}),
      ...(options.versionId ? { VersionId: options.versionId } : {}),
    };
    const changed = (err: unknown) => asChanged(err, key);
    if (!this.options.sdkReads) return readObject(this.client, input, signal, changed);
    const client = this.client;
    return (async function* () {
      const out = await client
        .send(new GetObjectCommand(input), { abortSignal: signal })
        .catch((err: unknown) => {
          throw changed(err);
        });
      if (out.Body) yield* out.Body as Readable;
    })();
  }

  async readRange(
    key: string,
    offset: number,
    length: number,
    signal?: AbortSignal,
    options: { versionId?: string } = {},
  ): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    const out = await this.client.send(
      new GetObjectCommand({
        Bucket: this.bucket,
        Key: key,
        ...(options.versionId ? { VersionId: options.versionId } : {}),
        Range: `bytes=${offset}-${offset + length - 1}`,
      }),
      { abortSignal: signal },
    );
    if (!out.Body) return new Uint8Array(0);
    return out.Body.transformToByteArray();
  }

  async write(
    key: string,
    body: AsyncIterable<Uint8Array>,
    signal?: AbortSignal,
    options: WriteOptions = {},
  ): Promise<Written> {
    const partSize = storedImagePartSize(options.sizeHint, this.options.partSize);
    // A hinted body keeps its part size while it stays within the hint, then grows its parts fast; an
    // unhinted one grows them slowly from the start (both reach S3's limits within 10,000 parts).
    const growth = options.sizeHint
      ? { growAfter: Math.ceil(options.sizeHint / partSize), growEvery: 100 }
      : { growAfter: 0 };
    return writeObject(body, {
      client: this.writer,
      bucket: this.bucket,
      key,
      partSize,
      ...growth,
      queueSize: this.options.queueSize ?? 4,
      contentType: "application/octet-stream",
      ...(signal ? { signal } : {}),
      ...(options.tap ? { tap: options.tap } : {}),
      ...(this.zeros ? { zeros: this.zeros } : {}),
      ...(options.copyFrom ? { copyFrom: options.copyFrom } : {}),
    });
  }

  async copy(from: string, to: string, options: CopyOptions = {}): Promise<{ size: number }> {
    const size = options.size ?? (await this.head(from))?.size;
    if (size === undefined) throw new Error(`no object at ${from} to copy`);
    return copyObject({
      client: this.client,
      bucket: this.bucket,
      from,
      to,
      size,
      ifMatch: options.ifMatch,
      signal: options.signal,
    });
  }

  async delete(key: string, versionId?: string): Promise<void> {
    if (versionId !== undefined) {
      await this.deleteVersion(key, versionId);
      return;
    }
    await this.deleteVersions(key, (v) => v.key === key);
  }

  async deleteOtherVersions(key: string, keep: string): Promise<void> {
    await this.deleteVersions(key, (v) => v.key === key && v.versionId !== keep);
  }

  private async deleteVersion(key: string, versionId: string): Promise<void> {
    try {
      await this.client.send(
        new DeleteObjectCommand({ Bucket: this.bucket, Key: key, VersionId: versionId }),
      );
    } catch (err) {
      // Gone already (or never there): the goal is reached.
      if (
        !(err instanceof S3ServiceException && /^(NoSuchVersion|NoSuchKey|InvalidArgument)$/.test(err.name))
      )
        throw err;
    }
  }

  /** Deletes the versions and delete markers under `prefix` that `which` picks, a listing page per request. */
  private async deleteVersions(
    prefix: string,
    which: (v: ListedVersion) => boolean,
    pageSize?: number,
  ): Promise<void> {
    for await (const page of objectVersionPages(this.client, this.bucket, prefix, pageSize)) {
      const objects = page.filter(which).map((v) => ({ Key: v.key, VersionId: v.versionId }));
      if (objects.length === 0) continue;
      const out = await this.client.send(
        new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: objects, Quiet: true } }),
      );
      const failed = (out.Errors ?? []).filter((e) => e.Code !== "NoSuchVersion");
      if (failed.length > 0) {
        throw new Error(`could not delete ${failed.length} versions under ${prefix}: ${failed[0]?.Code}`);
      }
    }
  }

  async *list(prefix: string): AsyncIterable<{ key: string; size: number }> {
    for await (const page of this.objectPages(prefix)) {
      for (const o of page.Contents ?? []) if (o.Key) yield { key: o.Key, size: o.Size ?? 0 };
    }
  }

  async *listVersions(prefix: string, pageSize?: number): AsyncIterable<ListedVersion> {
    for await (const page of objectVersionPages(this.client, this.bucket, prefix, pageSize)) yield* page;
  }

  private objectPages(prefix: string, pageSize?: number) {
    return paginateListObjectsV2(
      { client: this.client, ...(pageSize !== undefined ? { pageSize } : {}) },
      { Bucket: this.bucket, Prefix: prefix },
    );
  }

  /**
   * Deletes every object under `prefix`, every version of each and their delete markers, a listing page
   * (up to 1000, DeleteObjects' own limit) per request, then aborts every multipart upload storage lists under it, all pages of them. `pageSize`
   * shortens both listings' pages (tests).
   */
  async deletePrefix(prefix: string, pageSize?: number): Promise<void> {
    await this.deleteVersions(prefix, () => true, pageSize);
    // S3 lists uploads by prefix; MinIO only for a whole key, so callers abort known keys with `abortUploads`.
    // Every page is listed before any abort: an upload aborted under the listing's markers ends it early
    // on MinIO (the next page starts after an upload id that no longer exists).
    const uploads = await listMultipartUploads(this.client, this.bucket, prefix, pageSize);
    for (const u of uploads) await this.abortUpload(u.key, u.uploadId);
  }

  async listUploads(prefix: string): Promise<PendingWrite[]> {
    return (await listMultipartUploads(this.client, this.bucket, prefix)).map(({ key, uploadId }) => ({
      key,
      uploadId,
    }));
  }

  async abortUploads(key: string): Promise<number> {
    const uploads = (await this.listUploads(key)).filter((u) => u.key === key);
    for (const u of uploads) await this.abortUpload(u.key, u.uploadId);
    return uploads.length;
  }

  private async abortUpload(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(
        new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }),
      );
    } catch (err) {
      // Aborted meanwhile (by the writer that owned it, or another cleanup): the goal is reached.
      if (!(err instanceof S3ServiceException && err.name === "NoSuchUpload")) throw err;
    }
  }
}

function expiry(seconds: number): string {
  return new Date(Date.now() + seconds * 1000).toISOString();
}
