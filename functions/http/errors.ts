import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type * as z from "zod/mini";
import {
  ConflictError,
  ForbiddenError,
  type HangarError,
  ImageNotFoundError,
  ImportRejectedError,
  InvalidRequestError,
  LimitExceededError,
  NotFoundError,
  UnauthenticatedError,
  UnsupportedMediaTypeError,
  UriNotAllowedError,
} from "../core/errors.ts";
import { QuotaExceededError } from "../core/quota.ts";

const TITLES: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  409: "Conflict",
  410: "Gone",
  413: "Request Entity Too Large",
  415: "Unsupported Media Type",
  500: "Internal Server Error",
};

/** The one table from domain errors to HTTP statuses. Order matters: subclasses first. */
const STATUS_OF: [new (...args: never[]) => HangarError, ContentfulStatusCode][] = [
  [InvalidRequestError, 400],
  // Glance answers 400 when a web-download URI does not pass its filtering.
  [UriNotAllowedError, 400],
  [UnauthenticatedError, 401],
  [ForbiddenError, 403],
  [ImageNotFoundError, 404],
  [NotFoundError, 404],
  [ConflictError, 409],
  [ImportRejectedError, 409],
  [LimitExceededError, 413],
  [QuotaExceededError, 413],
  [UnsupportedMediaTypeError, 415],
];

/** A schema violation as one line for a 400's message: `field: problem; other: problem`. */
export const describeZod = (err: Pick<z.core.$ZodError, "issues">): string =>
  err.issues.map((i) => (i.path.length ? `${i.path.join(".")}: ${i.message}` : i.message)).join("; ");

export function statusOf(err: unknown): ContentfulStatusCode {
  for (const [cls, status] of STATUS_OF) if (err instanceof cls) return status;
  return 500;
}

/**
 * Glance-compatible error body, nested so glanceclient prints the message:
 * `{"error": {"code", "title", "message", "reason"}}`.
 */
export function errorBody(status: number, message: string, reason: string) {
  return { error: { code: status, title: TITLES[status] ?? "Error", message, reason } };
}

export function errorResponse(c: Context, status: ContentfulStatusCode, message: string, reason: string) {
  return c.json(errorBody(status, message, reason), status);
}

/** 4xx carry the domain message; 5xx a generic one, the detail goes to the log. */
export function toErrorResponse(
  c: Context,
  err: unknown,
  log: (msg: string, f: Record<string, unknown>) => void,
) {
  const status = statusOf(err);
  if (status >= 500) {
    log("unhandled error", { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    return errorResponse(c, 500, "The server could not complete the request.", "INTERNAL_ERROR");
  }
  const e = err as HangarError;
  return errorResponse(c, status, e.message, e.reason);
}
