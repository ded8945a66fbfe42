import { HangarError, type ImportFailureReason } from "../errors.ts";

/** The image uses a feature the converters do not implement (backing files, encryption, ...). */
export class UnsupportedImageError extends HangarError {
  readonly reason: ImportFailureReason = "UNSUPPORTED_FORMAT";
}

/** The image's metadata contradicts itself or points outside the file. */
export class CorruptImageError extends HangarError {
  readonly reason: ImportFailureReason = "UNSAFE_IMAGE";
}

/**
 * A forward-only source (a gzip-wrapped upload) cannot give what this image needs: its end (a
 * footer) or bytes it has already passed. The importer then spools the decompressed bytes to
 * temporary storage and converts them with a RangeReader.
 */
export class NeedsRangedReadsError extends HangarError {
  readonly reason: ImportFailureReason = "UNSUPPORTED_FORMAT";
}

/** A forward-only source was asked for bytes it has already passed. */
export class NonMonotonicSourceError extends NeedsRangedReadsError {
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
