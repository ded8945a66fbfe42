import type { PresignedRequest } from "../ports.ts";

/** A part already in storage. */
export interface StoredPart {
  partNumber: number;
  size: number;
  etag: string;
  lastModified: string | undefined;
}

/** A multipart upload in storage that has not been completed or aborted. */
export interface PendingUpload {
  key: string;
  uploadId: string;
  initiated: string | undefined;
}

/** An object in storage, as a listing shows it. */
export interface ListedObject {
  key: string;
  size: number;
  lastModified: string | undefined;
}

/**
 * Storage multipart uploads that clients fill through presigned part links (S3, MinIO). Kept apart from
 * `ObjectStore` so its implementations need not change. Implementations treat an upload that no longer
 * exists as `undefined` (lists) or as done (abort).
 */
export interface MultipartUploads {
  /** Starts a multipart upload at `key`; returns its upload id. */
  create(key: string): Promise<string>;
  /** A presigned `UploadPart` whose signature covers `contentLength`, so storage refuses any other length. */
  presignPart(
    key: string,
    uploadId: string,
    partNumber: number,
    options: { expiresInSeconds: number; contentLength: number },
  ): Promise<PresignedRequest>;
  /** Every part uploaded so far, by part number; `undefined` when the upload does not exist (any more). */
  listParts(key: string, uploadId: string): Promise<StoredPart[] | undefined>;
  /** Assembles the object from the given parts; storage then sends its `ObjectCreated` event. */
  complete(
    key: string,
    uploadId: string,
    parts: readonly { partNumber: number; etag: string }[],
  ): Promise<void>;
  /** Aborts the upload and frees its parts; an upload that is already gone is not an error. */
  abort(key: string, uploadId: string): Promise<void>;
  /** Uploads in progress under a prefix. */
  listPending(prefix: string): Promise<PendingUpload[]>;
  /** Objects under a prefix. */
  listObjects(prefix: string): Promise<ListedObject[]>;
}
