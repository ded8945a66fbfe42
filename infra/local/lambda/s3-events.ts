import * as z from "zod";

/** One record of MinIO's webhook envelope: S3's record shape, MinIO's spelling (`s3:` names, keys with %2F). */
const MinioRecord = z.object({
  eventTime: z.string(),
  eventName: z.string().regex(/^s3:/),
  userIdentity: z.object({ principalId: z.string() }).partial().optional(),
  requestParameters: z.object({ sourceIPAddress: z.string() }).partial().optional(),
  responseElements: z.record(z.string(), z.unknown()).optional(),
  s3: z.object({
    configurationId: z.string().optional(),
    bucket: z.object({ name: z.string().min(1) }),
    object: z.object({
      key: z.string().min(1),
      size: z.number().int().nonnegative().optional(),
      eTag: z.string().optional(),
      versionId: z.string().optional(),
      sequencer: z.string().optional(),
    }),
  }),
});

/** MinIO's webhook body: `{EventName, Key, Records}`. */
export const MinioEnvelope = z.object({
  EventName: z.string(),
  Key: z.string(),
  Records: z.array(MinioRecord).min(1),
});

export type MinioEnvelope = z.infer<typeof MinioEnvelope>;

/** The S3 event record AWS delivers to Lambda (the fields AWS documents for event version 2.1). */
export interface S3EventRecord {
  eventVersion: string;
  eventSource: "aws:s3";
  awsRegion: string;
  eventTime: string;
  eventName: string;
  userIdentity: { principalId: string };
  requestParameters: { sourceIPAddress: string };
  responseElements: { "x-amz-request-id": string; "x-amz-id-2": string };
  s3: {
    s3SchemaVersion: "1.0";
    configurationId: string;
    bucket: { name: string; ownerIdentity: { principalId: string }; arn: string };
    object: { key: string; size: number; eTag: string; versionId?: string; sequencer: string };
  };
}

/**
 * An object key encoded as S3 puts it into event notifications: form-style URL encoding (`+` for a
 * space) with `/` left as it is. MinIO encodes `/` as `%2F`; both decode to the same key.
 */
export function encodeS3EventKey(key: string): string {
  return encodeURIComponent(key).replace(/%20/g, "+").replace(/%2F/gi, "/");
}

/** MinIO's key decoded (`+` is a space, then percent-decoding). */
function decodeMinioKey(key: string): string {
  return decodeURIComponent(key.replace(/\+/g, " "));
}

/** MinIO's envelope as the S3 event JSON AWS sends Lambda: `{"Records": [...]}`. */
export function toS3Event(envelope: MinioEnvelope, region: string): { Records: S3EventRecord[] } {
  return {
    Records: envelope.Records.map((r) => {
      const given = r.responseElements?.["x-amz-request-id"];
      const requestId = typeof given === "string" ? given : "";
      return {
        eventVersion: "2.1",
        eventSource: "aws:s3",
        awsRegion: region,
        eventTime: r.eventTime,
        eventName: r.eventName.replace(/^s3:/, ""),
        userIdentity: { principalId: `AWS:${r.userIdentity?.principalId ?? "local"}` },
        requestParameters: { sourceIPAddress: r.requestParameters?.sourceIPAddress ?? "127.0.0.1" },
        responseElements: { "x-amz-request-id": requestId, "x-amz-id-2": requestId },
        s3: {
          s3SchemaVersion: "1.0",
          configurationId: r.s3.configurationId ?? "hangar-import",
          bucket: {
            name: r.s3.bucket.name,
            ownerIdentity: { principalId: "local" },
            arn: `arn:aws:s3:::${r.s3.bucket.name}`,
          },
          object: {
            key: encodeS3EventKey(decodeMinioKey(r.s3.object.key)),
            size: r.s3.object.size ?? 0,
            eTag: r.s3.object.eTag ?? "",
            ...(r.s3.object.versionId ? { versionId: r.s3.object.versionId } : {}),
            sequencer: r.s3.object.sequencer ?? "",
          },
        },
      };
    }),
  };
}

/** `ObjectCreated:Put hangar-local/staging/<id>` for each record of an S3 event, or undefined if it is not one. */
export function describeS3Event(event: unknown): string | undefined {
  const records = (event as { Records?: unknown } | null)?.Records;
  if (!Array.isArray(records)) return undefined;
  const parts = records.map(
    (r: { eventName?: unknown; s3?: { bucket?: { name?: unknown }; object?: { key?: unknown } } }) => {
      const key = typeof r.s3?.object?.key === "string" ? safeDecode(r.s3.object.key) : "?";
      return `${String(r.eventName)} ${String(r.s3?.bucket?.name)}/${key}`;
    },
  );
  return parts.length > 0 ? parts.join(", ") : undefined;
}

function safeDecode(key: string): string {
  try {
    return decodeMinioKey(key);
  } catch {
    return key;
  }
}

/** How long a delivered event is remembered: MinIO's queued copy follows the immediate one within 3 s. */
const REMEMBER_MS = 10 * 60_000;
const REMEMBER_MAX = 10_000;

/**
 * The events already queued for the importer, by what identifies one event (name, bucket, key and
 * MinIO's sequencer, which differs for every write of an object), so that the second copy MinIO sends of
 * each event with durable delivery is acknowledged without a second invocation. The stack saves them at
 * stop and loads them at start (`entries`), because MinIO's queued copy of an event delivered just before
 * a stop arrives after the next start. After a crash such a copy is invoked again, which the importer
 * ignores as a duplicate (an image already imported or being imported), as it ignores S3's own.
 */
export class RecentEvents {
  private readonly seen: Map<string, number>;

  constructor(entries: Iterable<[string, number]> = []) {
    this.seen = new Map(entries);
  }

  /** What to save, to construct the next run's with. */
  entries(): [string, number][] {
    return [...this.seen];
  }

  /**
   * Claims `envelope` for queueing: undefined when a copy of it was claimed already; otherwise `release`
   * gives the claim back (the event could not be queued, and MinIO will send it again).
   */
  claim(envelope: MinioEnvelope, now = Date.now()): { release(): void } | undefined {
    const id = envelope.Records.map(
      (r) =>
        `${r.eventName} ${r.s3.bucket.name}/${r.s3.object.key} ${r.s3.object.sequencer ?? `${r.eventTime} ${r.s3.object.eTag ?? ""}`}`,
    ).join("\n");
    for (const [key, at] of this.seen) {
      if (now - at <= REMEMBER_MS && this.seen.size <= REMEMBER_MAX) break;
      this.seen.delete(key);
    }
    if (this.seen.has(id)) return undefined;
    this.seen.set(id, now);
    return { release: () => void this.seen.delete(id) };
  }
}
