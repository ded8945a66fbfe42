import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";
import type { StorageObjectEvent } from "../../core/import/storage-events.ts";

// zod's mini API (functions/config.ts says why); mini loads no locale of its own.
z.config(en());

/** One record of an S3 (or MinIO) bucket notification; only the fields Hangar reads. */
const RecordSchema = z.object({
  eventName: z.string(),
  s3: z.object({
    bucket: z.object({ name: z.string() }),
    object: z.object({
      key: z.string(),
      size: z.optional(z.number()),
      // Present when the bucket keeps versions (S3 and MinIO alike).
      versionId: z.optional(z.string()),
    }),
  }),
});

/** Both envelopes: S3's `{Records}` and MinIO's webhook `{EventName, Key, Records}`. */
const EnvelopeSchema = z.looseObject({ Records: z.array(RecordSchema) });

export class InvalidStorageEventError extends Error {
  override name = "InvalidStorageEventError";
}

/** S3 and MinIO encode keys as in a URL query (`+` for space, `%2F` for `/`). */
export const decodeEventKey = (key: string): string => decodeURIComponent(key.replace(/\+/g, " "));

/** Validates a notification envelope and returns its object-created events, keys decoded. */
export function parseStorageEvent(body: unknown): StorageObjectEvent[] {
  const parsed = EnvelopeSchema.safeParse(body);
  if (!parsed.success) {
    throw new InvalidStorageEventError(
      `not an S3 event notification: ${parsed.error.issues[0]?.message ?? ""}`,
    );
  }
  return parsed.data.Records.filter((r) => /^(s3:)?ObjectCreated:/.test(r.eventName)).map((r) => {
    const { versionId } = r.s3.object;
    return {
      bucket: r.s3.bucket.name,
      key: decodeEventKey(r.s3.object.key),
      // "null": an object written while the bucket kept no versions.
      ...(versionId && versionId !== "null" ? { versionId } : {}),
    };
  });
}
