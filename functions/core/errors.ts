import type { ImageRecord } from "./image/image.ts";

/**
 * Domain errors. They carry no HTTP status: `functions/http/errors.ts` maps them at the edge.
 * `reason` is a stable machine-readable code that also appears in the Glance-style error body.
 */
export abstract class HangarError extends Error {
  abstract readonly reason: string;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The caller sent something malformed or contradictory. */
export class InvalidRequestError extends HangarError {
  readonly reason: string;
  constructor(message: string, reason = "INVALID_REQUEST", options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}

/** No such image, or the caller may not know it exists (Glance answers 404 for both). */
export class ImageNotFoundError extends HangarError {
  readonly reason = "NOT_FOUND";
  constructor(readonly imageId: string) {
    super(`No image found with ID ${imageId}`);
  }
}

/** The caller is authenticated but may not do this. */
export class ForbiddenError extends HangarError {
  readonly reason: string;
  constructor(message: string, reason = "FORBIDDEN") {
    super(message);
    this.reason = reason;
  }
}

/** No or invalid credentials. */
export class UnauthenticatedError extends HangarError {
  readonly reason: string;
  constructor(message: string, options?: { cause?: unknown; reason?: "TOKEN_EXPIRED" | "TOKEN_INVALID" }) {
    super(message, options);
    this.reason = options?.reason ?? "UNAUTHENTICATED";
  }
}

/** The image is not in a state that allows the operation, or a concurrent change won. */
export class ConflictError extends HangarError {
  readonly reason: string;
  constructor(message: string, reason = "CONFLICT", options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}

/**
 * A conditional write lost: the record's status was not the one expected (or a guarded field changed).
 * `current` is the record the write found, as the store returned it with the refusal; undefined when
 * there was none.
 */
export class StaleStatusError extends ConflictError {
  readonly current: ImageRecord | undefined;
  constructor(
    readonly imageId: string,
    readonly expected: readonly string[],
    options?: { cause?: unknown; current?: ImageRecord | undefined },
  ) {
    super(`image ${imageId} is no longer in status ${expected.join(" or ")}`, "STALE_STATUS", options);
    this.current = options?.current;
  }
}

/** Reasons an import ends with the image `killed`. Permanent: retrying would give the same answer. */
export const IMPORT_FAILURE_REASONS = [
  "SIZE_MISMATCH",
  "DIGEST_MISMATCH",
  "FORMAT_MISMATCH",
  "UNSAFE_IMAGE",
  "UNSUPPORTED_FORMAT",
  "QUOTA_EXCEEDED",
  "EMPTY_UPLOAD",
  "FETCH_FAILED",
  "IMPORT_CRASHED",
  /** A fanned-out import failed for a reason other than the image (docs/scale.md). */
  "FANOUT_FAILED",
] as const;
export type ImportFailureReason = (typeof IMPORT_FAILURE_REASONS)[number];

/** A permanent import failure: the image goes `killed` with this reason and message. */
export class ImportRejectedError extends HangarError {
  constructor(
    readonly reason: ImportFailureReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Something other than an image (a membership, a tag) does not exist, or the caller may not know it does. */
export class NotFoundError extends HangarError {
  readonly reason: string;
  constructor(message: string, reason = "NOT_FOUND", options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}

/** A per-image limit (members, tags, properties) would be exceeded; Glance answers 413. */
export class LimitExceededError extends HangarError {
  readonly reason = "LIMIT_EXCEEDED";
}

/** The request body is in a media type the operation does not take (e.g. PATCH without the JSON-patch type). */
export class UnsupportedMediaTypeError extends HangarError {
  readonly reason = "UNSUPPORTED_MEDIA_TYPE";
}

/** A web-download URL Hangar refuses to fetch (scheme, or an address that is not public). */
export class UriNotAllowedError extends HangarError {
  readonly reason = "URI_NOT_ALLOWED";
}
