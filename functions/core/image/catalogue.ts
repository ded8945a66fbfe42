import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";
import { once } from "../once.ts";
import { MAX_OBJECT_SIZE } from "../uploads/plan.ts";
import { MAX_NAME, MAX_PROPERTY_VALUE, MAX_TAGS } from "./fields.ts";
import { CONTAINER_FORMATS, DISK_FORMATS } from "./format-names.ts";
import { IMAGE_ID_PATTERN, IMAGE_STATUSES, VISIBILITIES } from "./image.ts";

/**
 * The catalogue of image attributes: every top-level name an image has or Glance gives a meaning to, with
 * its type (a zod schema) and who may write it. `/v2/schemas/image`, the OpenAPI document, the image JSON,
 * the create and PATCH rules and the read-only set are all derived from it, so a field is declared once.
 */

// zod's mini API (the classic one costs the api function's cold start its setup); mini loads no locale of
// its own, and English is the one every message is written in.
z.config(en());

/**
 * Who writes an attribute:
 * - `settable`: the client, on create and by PATCH;
 * - `create-only`: the client, on create only (`id`); a change afterwards is refused as read-only;
 * - `read-only`: Hangar alone (403 "Attribute 'x' is read-only.");
 * - `reserved`: nobody, Glance's reserved names (403 "Attribute 'x' is reserved.").
 */
export type FieldAccess = "settable" | "create-only" | "read-only" | "reserved";

export interface FieldInfo {
  access: FieldAccess;
  /** Settable only while the image is `queued` (Glance: "can be only replaced for a queued image"). */
  queuedOnly?: boolean;
  /** What `/v2/schemas/image` says of a shown attribute. */
  description?: string;
}

/**
 * The catalogue's schemas, built the first time something asks for them (an image shown, created or
 * changed, a schema document) rather than when the module loads: a cold start that serves none of those
 * never builds them (docs/deploy.md).
 */
export const imageCatalogue = once(() => {
  /** The metadata of each shown attribute's schema (a zod registry, keyed by the schema object). */
  const imageFieldInfo = z.registry<FieldInfo>();

  function field<T extends z.ZodMiniType>(schema: T, info: FieldInfo): T {
    imageFieldInfo.add(schema, info);
    return schema;
  }
  const settable = <T extends z.ZodMiniType>(schema: T, description: string, queuedOnly = false): T =>
    field(schema, { access: "settable", description, queuedOnly });
  const readOnly = <T extends z.ZodMiniType>(schema: T, description: string): T =>
    field(schema, { access: "read-only", description });

  const int32 = () => z.number().check(z.int(), z.minimum(0), z.maximum(2 ** 31 - 1));
  const count = () => z.number().check(z.int(), z.minimum(0));

  /** Attributes a client sets on create and by PATCH, with the values each takes. */
  const SETTABLE = {
    name: settable(z.nullable(z.string().check(z.maxLength(MAX_NAME))), "Descriptive name for the image"),
    owner: settable(z.string().check(z.minLength(1), z.maxLength(MAX_NAME)), "Owner of the image"),
    visibility: settable(z.enum(VISIBILITIES), "Scope of image accessibility"),
    protected: settable(z.boolean(), "If true, image will not be deletable."),
    os_hidden: settable(z.boolean(), "If true, image will not appear in default image list response."),
    disk_format: settable(z.nullable(z.enum(DISK_FORMATS)), "Format of the disk", true),
    container_format: settable(z.nullable(z.enum(CONTAINER_FORMATS)), "Format of the container", true),
    min_disk: settable(int32(), "Amount of disk space (in GB) required to boot image."),
    min_ram: settable(int32(), "Amount of ram (in MB) required to boot image."),
    tags: settable(
      z.array(z.string().check(z.minLength(1), z.maxLength(MAX_NAME))).check(z.maxLength(MAX_TAGS)),
      "List of strings related to the image",
    ),
    // The deployment's own ceiling (below S3's 5 TiB) is a rule of `applyImageChanges`.
    upload_size: settable(
      z.nullable(z.number().check(z.int(), z.positive(), z.maximum(MAX_OBJECT_SIZE))),
      "Hangar: the number of bytes the upload will have",
      true,
    ),
    upload_sha256: settable(
      z.nullable(z.string().check(z.regex(/^[0-9a-fA-F]{64}$/, "must be 64 hexadecimal digits"))),
      "Hangar: hex sha256 of the upload, verified on import",
      true,
    ),
  };

  /** The upload link or multipart plan; its members are described in the field's text (they differ by method). */
  const uploadLink = z.looseObject({ method: z.enum(["PUT", "multipart"]), expires_at: z.string() });

  /** Attributes Hangar computes and shows; nobody sets them. */
  const READ_ONLY = {
    status: readOnly(z.enum(IMAGE_STATUSES), "Status of the image"),
    checksum: readOnly(z.nullable(z.string().check(z.maxLength(32))), "md5 hash of image contents."),
    os_hash_algo: readOnly(z.nullable(z.string().check(z.maxLength(64))), "Algorithm of os_hash_value"),
    os_hash_value: readOnly(z.nullable(z.string().check(z.maxLength(128))), "Hex digest of the image"),
    size: readOnly(z.nullable(count()), "Size of image file in bytes"),
    virtual_size: readOnly(z.nullable(count()), "Virtual size of image in bytes"),
    created_at: readOnly(z.string(), "Date and time of image registration"),
    updated_at: readOnly(z.string(), "Date and time of the last image modification"),
    self: readOnly(z.string(), "An image self url"),
    file: readOnly(z.string(), "An image file url"),
    schema: readOnly(z.string(), "An image schema url"),
    upload: readOnly(
      z.nullable(uploadLink),
      "Hangar: where to upload the image's bytes while queued: a presigned PUT (method, url, headers, expires_at) or, for large uploads, a multipart plan (method 'multipart', part_size, part_count, expires_at, parts_url, complete_url, cancel_url)",
    ),
    source_format: readOnly(z.nullable(z.string()), "Hangar: disk format detected in the upload"),
    converted: readOnly(z.nullable(z.boolean()), "Hangar: whether the upload was converted"),
    failure: readOnly(
      z.nullable(z.looseObject({ reason: z.string(), message: z.string() })),
      "Hangar: why the import failed (reason, message)",
    ),
    import_progress: readOnly(
      z.nullable(z.looseObject({ bytes_read: count(), total: count(), updated_at: z.string() })),
      "Hangar: while importing, bytes of the upload read so far (bytes_read of total, updated_at); an import that reads the upload again starts from 0, and one converting to qcow2 reads it whole before writing its data",
    ),
    staged_size: readOnly(
      z.nullable(count()),
      "Hangar: uploaded-but-unprocessed bytes this image holds against its project's quota",
    ),
  };

  /** An extra property's value: a string (Glance's rule), of at most 65535 characters. */
  const propertyValue = z
    .string()
    .check(z.maxLength(MAX_PROPERTY_VALUE, "extra properties are strings of at most 65535 characters"));

  /**
   * An image as the API shows it: the attributes above, `id` (set on create, or made by Hangar) and any extra
   * string properties. Responses are built from this shape (`SHOWN_FIELDS`), never from the stored record's keys.
   */
  const ImageJson = z.catchall(
    z.object({
      id: field(z.string().check(z.regex(new RegExp(IMAGE_ID_PATTERN), "must be a lowercase UUID")), {
        access: "create-only",
        description: "An identifier for the image",
      }),
      ...SETTABLE,
      ...READ_ONLY,
    }),
    propertyValue,
  );

  /** Every attribute an image shows, in the order `/v2/schemas/image` lists them. */
  const SHOWN_FIELDS = Object.keys(ImageJson.shape) as (keyof typeof ImageJson.shape)[];
  return {
    imageFieldInfo,
    propertyValue,
    ImageJson,
    /** The settable attributes' value schemas, by name: what create and PATCH validate a value with. */
    SETTABLE_FIELDS: SETTABLE as Readonly<Record<keyof typeof SETTABLE, z.ZodMiniType>>,
    SHOWN_FIELDS,
  };
});
type Catalogue = ReturnType<typeof imageCatalogue>;
export type ImageJson = z.output<Catalogue["ImageJson"]>;
export type SettableField = keyof Catalogue["SETTABLE_FIELDS"];
export type ShownField = Catalogue["SHOWN_FIELDS"][number];

/**
 * Names an image never shows but that are not free for extra properties: Hangar's bookkeeping on the record,
 * and Glance's attributes Hangar does not keep or reserves.
 */
const UNSHOWN: Readonly<Record<string, FieldInfo>> = {
  // Hangar's own: the import lease and takeovers, the storage multipart upload behind a large upload.
  import_lease_until: { access: "read-only" },
  import_takeovers: { access: "read-only" },
  multipart_upload_id: { access: "read-only" },
  multipart_started_at: { access: "read-only" },
  stored_object: { access: "read-only" },
  // Glance's read-only attributes Hangar does not show.
  locations: { access: "read-only" },
  direct_url: { access: "read-only" },
  // Glance's reserved names (with every `os_glance*` name).
  deleted: { access: "reserved" },
  deleted_at: { access: "reserved" },
  location: { access: "reserved" },
  properties: { access: "reserved" },
};

/** What the catalogue says of a top-level name; undefined for a name free for an extra property. */
export function fieldInfo(name: string): FieldInfo | undefined {
  const { ImageJson, imageFieldInfo } = imageCatalogue();
  if (Object.hasOwn(ImageJson.shape, name)) return imageFieldInfo.get(ImageJson.shape[name as ShownField]);
  if (Object.hasOwn(UNSHOWN, name)) return UNSHOWN[name];
  return name.startsWith("os_glance") ? { access: "reserved" } : undefined;
}

/** Every name a client may not change after create: the read-only attributes and `id` (shown or not). */
export const readOnlyFields = once(
  (): ReadonlySet<string> =>
    new Set(
      [...imageCatalogue().SHOWN_FIELDS, ...Object.keys(UNSHOWN)].filter((name) => {
        const access = fieldInfo(name)?.access;
        return access === "read-only" || access === "create-only";
      }),
    ),
);
