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
 * Not an error of the image but a signal to the importer: a forward-only source (a gzip-wrapped upload)
 * cannot give what this image needs, its end (a footer) or bytes it has already passed. The importer
 * then follows another plan: it spools the decompressed bytes to temporary storage and converts them with
 * a RangeReader. Deliberately not a HangarError, so it can never become a reason to kill an image.
 */
export class NeedsRangedReads extends Error {
  override name = "NeedsRangedReads";
}

/** A forward-only source was asked for bytes it has already passed. */
export class NonMonotonicSource extends NeedsRangedReads {
  override name = "NonMonotonicSource";
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
