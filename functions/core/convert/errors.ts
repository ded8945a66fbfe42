import { HangarError, type ImportFailureReason } from "../errors.ts";

/** The image uses a feature the converters do not implement (zstd clusters, backing files, ...). */
export class UnsupportedImageError extends HangarError {
  readonly reason: ImportFailureReason = "UNSUPPORTED_FORMAT";
}

/** The image's metadata contradicts itself or points outside the file. */
export class CorruptImageError extends HangarError {
  readonly reason: ImportFailureReason = "UNSAFE_IMAGE";
}

/**
 * A forward-only source (gzip-wrapped upload) was asked for bytes it has already passed.
 * The importer may spool the decompressed bytes to temporary storage and retry with a RangeReader.
 */
export class NonMonotonicSourceError extends HangarError {
  readonly reason: ImportFailureReason = "UNSUPPORTED_FORMAT";
  constructor(
    readonly requested: number,
    readonly retainedFrom: number,
  ) {
    super(
      `the image's metadata and data are not stored in increasing order (needs offset ${requested}, ` +
        `stream already at ${retainedFrom}); a compressed upload of such an image cannot be converted ` +
        "while streaming",
    );
  }
}
