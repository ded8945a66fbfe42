import { CONTAINER_FORMATS, DISK_FORMATS } from "../core/image/format-names.ts";
import { IMAGE_ID_PATTERN, type ImageRecord } from "../core/image/image.ts";
import { heldBy } from "../core/quota.ts";
import type { UploadLink } from "../core/uploads/multipart.ts";

/** The `upload` object in image responses: the link to follow, or the multipart plan, fully formed. */
export function uploadJson(upload: UploadLink) {
  if (upload.method === "multipart") {
    return {
      method: upload.method,
      part_size: upload.partSize,
      part_count: upload.partCount,
      expires_at: upload.expiresAt,
      parts_url: upload.partsUrl,
      complete_url: upload.completeUrl,
      cancel_url: upload.cancelUrl,
    };
  }
  return { method: upload.method, url: upload.url, headers: upload.headers, expires_at: upload.expiresAt };
}

/** Staged bytes held against the quota while queued (declared size) or importing (actual size). */
function stagedSize(image: ImageRecord): number | null {
  return image.status === "queued" || image.status === "importing" ? heldBy(image).image_stage_total : null;
}

const glanceTime = (iso: string) => iso.replace(/\.\d{3}Z$/, "Z");

/** An image as Glance v2 shows it, plus Hangar's fields (declared in the image schema). */
export function imageJson(image: ImageRecord, upload?: UploadLink) {
  return {
    ...image.properties,
    id: image.id,
    name: image.name,
    status: image.status,
    visibility: image.visibility,
    protected: image.protected,
    os_hidden: image.os_hidden,
    owner: image.owner,
    disk_format: image.disk_format,
    container_format: image.container_format,
    size: image.size,
    virtual_size: image.virtual_size,
    checksum: image.checksum,
    os_hash_algo: image.os_hash_algo,
    os_hash_value: image.os_hash_value,
    min_disk: image.min_disk,
    min_ram: image.min_ram,
    tags: image.tags,
    created_at: glanceTime(image.created_at),
    updated_at: glanceTime(image.updated_at),
    self: `/v2/images/${image.id}`,
    file: `/v2/images/${image.id}/file`,
    schema: "/v2/schemas/image",
    upload: upload ? uploadJson(upload) : null,
    upload_size: image.upload_size,
    upload_sha256: image.upload_sha256,
    source_format: image.source_format,
    converted: image.converted,
    failure: image.failure,
    import_progress: image.import_progress,
    staged_size: stagedSize(image),
  };
}

const nullable = (type: string, extra: Record<string, unknown> = {}) => ({ type: ["null", type], ...extra });

/**
 * `/v2/schemas/image`: Glance's image schema with Hangar's fields declared, so strict clients validate them.
 * glanceclient turns every property into a CLI option; names that clash with its options are never used.
 */
export const IMAGE_SCHEMA = {
  name: "image",
  additionalProperties: { type: "string" },
  properties: {
    id: {
      type: "string",
      pattern: IMAGE_ID_PATTERN,
      description: "An identifier for the image",
    },
    name: nullable("string", { maxLength: 255, description: "Descriptive name for the image" }),
    status: {
      type: "string",
      readOnly: true,
      enum: ["queued", "importing", "active", "killed", "deactivated", "deleted"],
      description: "Status of the image",
    },
    visibility: {
      type: "string",
      enum: ["community", "public", "private", "shared"],
      description: "Scope of image accessibility",
    },
    protected: { type: "boolean", description: "If true, image will not be deletable." },
    os_hidden: {
      type: "boolean",
      description: "If true, image will not appear in default image list response.",
    },
    owner: nullable("string", { maxLength: 255, description: "Owner of the image" }),
    checksum: nullable("string", {
      readOnly: true,
      maxLength: 32,
      description: "md5 hash of image contents.",
    }),
    os_hash_algo: nullable("string", {
      readOnly: true,
      maxLength: 64,
      description: "Algorithm of os_hash_value",
    }),
    os_hash_value: nullable("string", {
      readOnly: true,
      maxLength: 128,
      description: "Hex digest of the image",
    }),
    min_ram: { type: "integer", description: "Amount of ram (in MB) required to boot image." },
    min_disk: { type: "integer", description: "Amount of disk space (in GB) required to boot image." },
    size: nullable("integer", { readOnly: true, description: "Size of image file in bytes" }),
    virtual_size: nullable("integer", { readOnly: true, description: "Virtual size of image in bytes" }),
    container_format: nullable("string", {
      enum: [null, ...CONTAINER_FORMATS],
      description: "Format of the container",
    }),
    disk_format: nullable("string", { enum: [null, ...DISK_FORMATS], description: "Format of the disk" }),
    created_at: { type: "string", readOnly: true, description: "Date and time of image registration" },
    updated_at: {
      type: "string",
      readOnly: true,
      description: "Date and time of the last image modification",
    },
    tags: {
      type: "array",
      items: { type: "string", maxLength: 255 },
      description: "List of strings related to the image",
    },
    self: { type: "string", readOnly: true, description: "An image self url" },
    file: { type: "string", readOnly: true, description: "An image file url" },
    schema: { type: "string", readOnly: true, description: "An image schema url" },
    upload: nullable("object", {
      readOnly: true,
      description:
        "Hangar: where to upload the image's bytes while queued: a presigned PUT (method, url, headers, expires_at) or, for large uploads, a multipart plan (method 'multipart', part_size, part_count, expires_at, parts_url, complete_url, cancel_url)",
    }),
    upload_size: nullable("integer", { description: "Hangar: the number of bytes the upload will have" }),
    upload_sha256: nullable("string", {
      pattern: "^[0-9a-fA-F]{64}$",
      description: "Hangar: hex sha256 of the upload, verified on import",
    }),
    source_format: nullable("string", {
      readOnly: true,
      description: "Hangar: disk format detected in the upload",
    }),
    converted: nullable("boolean", {
      readOnly: true,
      description: "Hangar: whether the upload was converted",
    }),
    failure: nullable("object", {
      readOnly: true,
      description: "Hangar: why the import failed (reason, message)",
    }),
    import_progress: nullable("object", {
      readOnly: true,
      description:
        "Hangar: while importing, bytes of the upload read so far (bytes_read of total, updated_at); an import that reads the upload again starts from 0, and one converting to qcow2 reads it whole before writing its data",
    }),
    staged_size: nullable("integer", {
      readOnly: true,
      description: "Hangar: uploaded-but-unprocessed bytes this image holds against its project's quota",
    }),
  },
  links: [
    { rel: "self", href: "{self}" },
    { rel: "enclosure", href: "{file}" },
    { rel: "describedby", href: "{schema}" },
  ],
} as const;

export const IMAGES_SCHEMA = {
  name: "images",
  properties: {
    images: { type: "array", items: IMAGE_SCHEMA },
    schema: { type: "string" },
    first: { type: "string" },
    next: { type: "string" },
  },
  links: [
    { rel: "first", href: "{first}" },
    { rel: "next", href: "{next}" },
    { rel: "describedby", href: "{schema}" },
  ],
} as const;
