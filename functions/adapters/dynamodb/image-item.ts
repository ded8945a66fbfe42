import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";
import type { FanoutJob } from "../../core/fanout/job.ts";
import { IMAGE_STATUSES, type ImageRecord, VISIBILITIES } from "../../core/image/image.ts";
import { listPosition } from "../../core/ports.ts";
import { type Counters, heldBy, QUOTA_KEYS } from "../../core/quota.ts";

/** Where an image item lives: `IMAGE#<id>`/`IMAGE`, beside its members (`IMAGE#<id>`/`MEMBER#<project>`). */
export const imageKeyOf = (id: string) => ({ pk: `IMAGE#${id}`, sk: IMAGE_SK });
export const IMAGE_SK = "IMAGE";

/** The indexes a listing reads, each ordered by `orderKey` (creation time, then id). */
export const INDEXES = {
  /** A project's images (`OWNER#<project>`) and its shares (`MEMBER#<project>`, member items). */
  owner: "gsi1",
  /** Public and community images (`VIS#public`, `VIS#community`); no other visibility is indexed. */
  visibility: "gsi2",
  /** Every image (`IMAGES`): admins' lists. */
  all: "gsi3",
} as const;
export const ALL_IMAGES = "IMAGES";

/** Sort key of every listing index: creation time, then id (ISO times sort as strings). */
export const orderKey = listPosition;

/**
 * The index keys that follow from a record, written in the same update as any change of the fields
 * they derive from; `remove` lists those the record no longer has (a visibility left public/community).
 */
export function indexKeys(image: Pick<ImageRecord, "id" | "owner" | "visibility" | "created_at">): {
  set: Record<string, string>;
  remove: string[];
} {
  const order = orderKey(image);
  const set: Record<string, string> = {
    gsi1pk: `OWNER#${image.owner}`,
    gsi1sk: order,
    gsi3pk: ALL_IMAGES,
    gsi3sk: order,
  };
  if (image.visibility === "public" || image.visibility === "community") {
    return { set: { ...set, gsi2pk: `VIS#${image.visibility}`, gsi2sk: order }, remove: [] };
  }
  return { set, remove: ["gsi2pk", "gsi2sk"] };
}

/** What an image holds against its project's quota, stored beside it so a write can be conditioned on it. */
export const heldAttribute = (k: (typeof QUOTA_KEYS)[number]) => `held_${k}`;

export function heldAttributes(held: Counters): Record<string, number> {
  return Object.fromEntries(QUOTA_KEYS.map((k) => [heldAttribute(k), held[k]]));
}

/** What the stored item holds; items written before quotas existed hold what their record implies. */
export function heldOf(item: Record<string, unknown>, record: ImageRecord): Counters {
  const out = { ...heldBy(record) };
  for (const k of QUOTA_KEYS) {
    const v = item[heldAttribute(k)];
    if (typeof v === "number") out[k] = v;
  }
  return out;
}

// zod's mini API loads no locale of its own: English is the one every message is written in (the record
// is the one schema every function reads).
z.config(en());

const nullableString = z._default(z.nullable(z.string()), null);
const nullableCount = z._default(z.nullable(z.number().check(z.nonnegative())), null);

/**
 * The stored image record. Every read goes through it, so an item that is not an image record (written
 * by hand, by another version, or damaged) is an error here rather than a wrong answer later. Fields
 * added after the first release default to null for older items; key and quota attributes are dropped.
 */
const StoredImage = z.object({
  id: z.string(),
  name: nullableString,
  status: z.enum(IMAGE_STATUSES),
  visibility: z.enum(VISIBILITIES),
  protected: z.boolean(),
  os_hidden: z._default(z.boolean(), false),
  owner: z.string(),
  disk_format: nullableString,
  container_format: nullableString,
  size: nullableCount,
  virtual_size: nullableCount,
  checksum: nullableString,
  os_hash_algo: nullableString,
  os_hash_value: nullableString,
  min_disk: z._default(z.number(), 0),
  min_ram: z._default(z.number(), 0),
  tags: z._default(z.array(z.string()), []),
  created_at: z.string(),
  updated_at: z.string(),
  properties: z._default(z.record(z.string(), z.string()), {}),
  upload_size: nullableCount,
  upload_sha256: nullableString,
  source_format: nullableString,
  converted: z._default(z.nullable(z.boolean()), null),
  failure: z._default(z.nullable(z.object({ reason: z.string(), message: z.string() })), null),
  import_progress: z._default(
    z.nullable(
      z.object({
        bytes_read: z.number(),
        total: z.number(),
        updated_at: z.string(),
        // A fanned-out import's counters (docs/scale.md).
        workers: z.optional(z.number()),
        ranges_done: z.optional(z.number()),
        ranges_total: z.optional(z.number()),
        bytes_hashed: z.optional(z.number()),
        upload_bytes_hashed: z.optional(z.number()),
      }),
    ),
    null,
  ),
  import_lease_until: nullableString,
  import_takeovers: z.optional(z.number()),
  request_id: z.optional(z.nullable(z.string())),
  multipart_upload_id: z.optional(z.nullable(z.string())),
  multipart_started_at: z.optional(z.nullable(z.string())),
  import_execution: z.optional(z.nullable(z.string())),
  // An upload kept as the image's data: its key and verified version (core/image/image.ts).
  stored_object: z.optional(z.nullable(z.object({ key: z.string(), version_id: z.optional(z.string()) }))),
  // The fan-out's job (core/fanout/job.ts), written and read by Hangar only.
  import_fanout: z.optional(
    z.nullable(z.custom<FanoutJob>((v) => typeof v === "object" && v !== null && !Array.isArray(v))),
  ),
});

/** A stored item that does not hold a valid image record. */
export class CorruptRecordError extends Error {
  constructor(key: string, issues: string) {
    super(`item ${key} is not a valid image record: ${issues}`);
    this.name = "CorruptRecordError";
  }
}

/** The image record an item holds, validated. */
export function toRecord(item: Record<string, unknown>): ImageRecord {
  const parsed = StoredImage.safeParse(item);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new CorruptRecordError(String(item.pk ?? item.id), issues);
  }
  return parsed.data satisfies ImageRecord;
}
