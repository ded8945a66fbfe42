import { HangarError, type ImportFailureReason } from "../errors.ts";
import type { CheckResult } from "./types.ts";

/**
 * The image failed a named safety check. `check` is stable (see docs/safety.md); the message is
 * written for the image owner and names the check. Truncated or malformed headers are reported
 * with this class too, under the check name `malformed header`, because an image whose metadata
 * cannot be read cannot be shown to be safe.
 */
export class UnsafeImageError extends HangarError {
  readonly reason: ImportFailureReason = "UNSAFE_IMAGE";
  constructor(
    readonly check: string,
    message: string,
    /** Every check that ran before the inspector gave up, for logs. */
    readonly checks: readonly CheckResult[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The image is in a format Hangar recognises but does not take (qed, parallels, cloop, bochs, nested gzip). */
export class UnsupportedFormatError extends HangarError {
  readonly reason: ImportFailureReason = "UNSUPPORTED_FORMAT";
  constructor(
    readonly format: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * A header parser met a field it cannot accept (short buffer, impossible value). Thrown by the
 * per-format parsers the converters reuse; the inspector turns it into an `UnsafeImageError` with
 * the check name `malformed header` and keeps it as the cause.
 */
export class MalformedImageError extends HangarError {
  readonly reason: ImportFailureReason = "UNSAFE_IMAGE";
  constructor(
    readonly format: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${format}: ${message}`, options);
  }
}
