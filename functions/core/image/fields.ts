import * as z from "zod";
import { CONTAINER_FORMATS, DISK_FORMATS } from "../../config.ts";
import { VISIBILITIES } from "./image.ts";

/** Glance's limits: a property value is a string of at most 65535 characters, names and tags at most 255. */
export const MAX_PROPERTY_VALUE = 65535;
export const MAX_NAME = 255;
/** Glance's default `image_tag_quota` and `image_property_quota`. */
export const MAX_TAGS = 128;
export const MAX_PROPERTIES = 128;

const int32 = z
  .number()
  .int()
  .min(0)
  .max(2 ** 31 - 1);

/**
 * The value schemas of the image fields a client may set, shared by create (POST) and update (PATCH) so
 * both validate alike; `/v2/schemas/image` and the OpenAPI document describe the same fields.
 */
export function settableFields(maxUploadSize: number) {
  return {
    name: z.string().max(MAX_NAME).nullable(),
    owner: z.string().min(1).max(MAX_NAME),
    visibility: z.enum(VISIBILITIES),
    protected: z.boolean(),
    os_hidden: z.boolean(),
    disk_format: z.enum(DISK_FORMATS).nullable(),
    container_format: z.enum(CONTAINER_FORMATS).nullable(),
    min_disk: int32,
    min_ram: int32,
    tags: z.array(z.string().min(1).max(MAX_NAME)).max(MAX_TAGS),
    upload_size: z.number().int().positive().max(maxUploadSize).nullable(),
    upload_sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, "must be 64 hexadecimal digits")
      .nullable(),
  };
}
export type SettableField = keyof ReturnType<typeof settableFields>;

/** An extra property's value. */
export const propertyValue = z
  .string()
  .max(MAX_PROPERTY_VALUE, "extra properties are strings of at most 65535 characters");

/** Fields nobody sets: computed by Hangar, or Glance's read-only attributes (`id` is settable on create only). */
export const READ_ONLY_FIELDS: ReadonlySet<string> = new Set([
  "status",
  "checksum",
  "os_hash_algo",
  "os_hash_value",
  "size",
  "virtual_size",
  "created_at",
  "updated_at",
  "self",
  "file",
  "schema",
  "direct_url",
  "locations",
  "upload",
  "source_format",
  "converted",
  "failure",
  "import_progress",
  "import_lease_until",
  "import_takeovers",
]);

/** Names Glance reserves; setting them is refused as reserved, not read-only. */
export function isReservedName(name: string): boolean {
  return ["deleted", "deleted_at", "location", "properties"].includes(name) || name.startsWith("os_glance");
}
