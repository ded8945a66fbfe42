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

/**
 * Reads one value of a stored item at `path` (dotted, as in the error), adding what is wrong with it to
 * `issues` (each `path: message`); what it returns is the value as the record holds it.
 */
type Field<T> = (value: unknown, path: string, issues: string[]) => T;

/** The name of a value's type in an issue: `null`, `array`, `NaN`, `Infinity`, a class's name, or `typeof`'s. */
function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  if (typeof value === "object") {
    const proto = Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null;
    if (proto && proto !== Object.prototype && proto.constructor?.name) return proto.constructor.name;
  }
  return typeof value;
}

const wrongType = (issues: string[], path: string, expected: string, value: unknown) => {
  issues.push(`${path}: Invalid input: expected ${expected}, received ${typeName(value)}`);
};
const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

const string: Field<string> = (v, path, issues) => {
  if (typeof v !== "string") wrongType(issues, path, "string", v);
  return v as string;
};
const boolean: Field<boolean> = (v, path, issues) => {
  if (typeof v !== "boolean") wrongType(issues, path, "boolean", v);
  return v as boolean;
};
const number: Field<number> = (v, path, issues) => {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    wrongType(issues, path, "number", v);
  }
  return v as number;
};
const count: Field<number> = (v, path, issues) => {
  const before = issues.length;
  const n = number(v, path, issues);
  if (issues.length === before && n < 0) issues.push(`${path}: Too small: expected number to be >=0`);
  return n;
};
const oneOf =
  <const V extends string>(values: readonly V[]): Field<V> =>
  (v, path, issues) => {
    if (!values.includes(v as V)) {
      const options = values.map((x) => JSON.stringify(x)).join("|");
      issues.push(`${path}: Invalid option: expected one of ${options}`);
    }
    return v as V;
  };
const nullable =
  <T>(field: Field<T>): Field<T | null> =>
  (v, path, issues) =>
    v === null ? null : field(v, path, issues);
/** Fields added after the first release: older items lack them. */
const withDefault =
  <T>(field: Field<T>, fallback: () => T): Field<T> =>
  (v, path, issues) =>
    v === undefined ? fallback() : field(v, path, issues);
const strings: Field<string[]> = (v, path, issues) => {
  if (!Array.isArray(v)) {
    wrongType(issues, path, "array", v);
    return v as string[];
  }
  return v.map((x, i) => string(x, `${path}.${i}`, issues));
};
/** A map of strings to strings, as a plain object (`properties`). */
const stringMap: Field<Record<string, string>> = (v, path, issues) => {
  const proto = isObject(v) ? Object.getPrototypeOf(v) : undefined;
  if (!isObject(v) || (proto !== Object.prototype && proto !== null)) {
    wrongType(issues, path, "record", v);
    return v as Record<string, string>;
  }
  const out: Record<string, string> = {};
  for (const [key, x] of Object.entries(v)) out[key] = string(x, `${path}.${key}`, issues);
  return out;
};

type Fields = Record<string, Field<unknown>>;
type Read<F extends Fields> = { [K in keyof F]: ReturnType<F[K]> };

/**
 * An object of `fields` (their order is the record's), without the item's other attributes (keys, index
 * keys, quota holds). A field the item lacks is left out, unless its reader gives a value for it (a default).
 */
function object<F extends Fields>(fields: F): Field<Read<F>> {
  const entries = Object.entries(fields);
  return (v, path, issues) => {
    if (!isObject(v)) {
      wrongType(issues, path, "object", v);
      return v as Read<F>;
    }
    const out: Record<string, unknown> = {};
    for (const [key, field] of entries) {
      const value = field(v[key], path ? `${path}.${key}` : key, issues);
      if (value !== undefined || key in v) out[key] = value;
    }
    return out as Read<F>;
  };
}
const optional =
  <T>(field: Field<T>): Field<T | undefined> =>
  (v, path, issues) =>
    v === undefined ? undefined : field(v, path, issues);

const nullableString = withDefault(nullable(string), () => null);
const nullableCount = withDefault(nullable(count), () => null);
const optionalNumber = optional(number);
const optionalNullableString = optional(nullable(string));

/**
 * The stored image record. Every read goes through it, so an item that is not an image record (written
 * by hand, by another version, or damaged) is an error here rather than a wrong answer later. Fields
 * added after the first release default to null for older items; key and quota attributes are dropped.
 *
 * A reader of its own rather than a zod schema: the schema was 76 zod schemas and checks built in the
 * init of every function, and its parse a share of every read (docs/deploy.md). It accepts what the schema
 * did, gives the same record, and names each problem as zod did (test/unit/image-item.test.ts).
 */
const StoredImage = object({
  id: string,
  name: nullableString,
  status: oneOf(IMAGE_STATUSES),
  visibility: oneOf(VISIBILITIES),
  protected: boolean,
  os_hidden: withDefault(boolean, () => false),
  owner: string,
  disk_format: nullableString,
  container_format: nullableString,
  size: nullableCount,
  virtual_size: nullableCount,
  checksum: nullableString,
  os_hash_algo: nullableString,
  os_hash_value: nullableString,
  min_disk: withDefault(number, () => 0),
  min_ram: withDefault(number, () => 0),
  tags: withDefault(strings, () => []),
  created_at: string,
  updated_at: string,
  properties: withDefault(stringMap, () => ({})),
  upload_size: nullableCount,
  upload_sha256: nullableString,
  source_format: nullableString,
  converted: withDefault(nullable(boolean), () => null),
  failure: withDefault(nullable(object({ reason: string, message: string })), () => null),
  import_progress: withDefault(
    nullable(
      object({
        bytes_read: number,
        total: number,
        updated_at: string,
        // A fanned-out import's counters (docs/scale.md).
        workers: optionalNumber,
        ranges_done: optionalNumber,
        ranges_total: optionalNumber,
        bytes_hashed: optionalNumber,
        upload_bytes_hashed: optionalNumber,
      }),
    ),
    () => null,
  ),
  import_lease_until: nullableString,
  import_takeovers: optionalNumber,
  request_id: optionalNullableString,
  multipart_upload_id: optionalNullableString,
  multipart_started_at: optionalNullableString,
  import_execution: optionalNullableString,
  // An upload kept as the image's data: its key and verified version (core/image/image.ts).
  stored_object: optional(nullable(object({ key: string, version_id: optional(string) }))),
  // The fan-out's job (core/fanout/job.ts), written and read by Hangar only: an object, kept as it is.
  import_fanout: optional(
    nullable<FanoutJob>((v, path, issues) => {
      if (!isObject(v)) issues.push(`${path}: Invalid input`);
      return v as FanoutJob;
    }),
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
  const issues: string[] = [];
  const record = StoredImage(item, "", issues);
  if (issues.length > 0) throw new CorruptRecordError(String(item.pk ?? item.id), issues.join("; "));
  return record satisfies ImageRecord;
}
