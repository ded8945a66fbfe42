import type { FanoutJob } from "../fanout/job.ts";

/** Glance v2 image statuses Hangar uses; no `uploading`/`saving` (design principle 4). */
export const IMAGE_STATUSES = ["queued", "importing", "active", "killed", "deactivated", "deleted"] as const;
export type ImageStatus = (typeof IMAGE_STATUSES)[number];

export const VISIBILITIES = ["public", "community", "shared", "private"] as const;
export type Visibility = (typeof VISIBILITIES)[number];

export interface ImageFailure {
  reason: string;
  message: string;
}

export interface ImportProgress {
  /** Bytes of the staged upload read so far, of `total`. */
  bytes_read: number;
  total: number;
  updated_at: string;
  /** A fanned-out import (docs/scale.md): ranges converted at once, ranges converted, ranges in all. */
  workers?: number;
  ranges_done?: number;
  ranges_total?: number;
  /** A fanned-out import: bytes of the stored image its hash chain has read. */
  bytes_hashed?: number;
  /** A fanned-out converted import with a declared sha256: bytes of the upload its own chain has read. */
  upload_bytes_hashed?: number;
}

/** The stored image record: Glance's fields plus Hangar's. Extra user properties are strings. */
export interface ImageRecord {
  id: string;
  name: string | null;
  status: ImageStatus;
  visibility: Visibility;
  protected: boolean;
  os_hidden: boolean;
  owner: string;
  disk_format: string | null;
  container_format: string | null;
  size: number | null;
  virtual_size: number | null;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  min_disk: number;
  min_ram: number;
  tags: string[];
  created_at: string;
  updated_at: string;
  properties: Record<string, string>;
  /** Bytes the client said it will upload; signed into the presigned PUT. */
  upload_size: number | null;
  /** Hex sha256 the client said the upload has; verified on import. */
  upload_sha256: string | null;
  /** Format detected in the upload, before any conversion. */
  source_format: string | null;
  converted: boolean | null;
  failure: ImageFailure | null;
  import_progress: ImportProgress | null;
  /**
   * ISO time until which an importer holds the image. A live importer renews it (heartbeat); a later
   * event may take the image over once it has passed. Its exact value identifies the holder's lease.
   */
  import_lease_until: string | null;
  /** The `x-openstack-request-id` of the create call; internal, carried onto the import's log lines. */
  request_id?: string | null;
  /** How often an import was taken over from an importer that died holding it; internal. */
  import_takeovers?: number;
  /** Storage multipart upload filling the staging key (large uploads); internal, never shown to clients. */
  multipart_upload_id?: string | null;
  /** When that multipart upload was started; its plan's `expires_at` counts from here. */
  multipart_started_at?: string | null;
  /**
   * The fan-out execution importing the image (docs/scale.md); internal. Its steps write only while it
   * is still this one.
   */
  import_execution?: string | null;
  /** What the importer decided for that execution (core/fanout/job.ts); internal. */
  import_fanout?: FanoutJob | null;
  /**
   * Where the image's data is when it is not at `images/<id>`: an upload stored as it is stays at its
   * staging key, and the record names the version the importer read and verified (`storedObject`).
   * Internal, never shown; absent for converted images and for images imported before versions were kept.
   */
  stored_object?: StoredObject | null;
}

/** One version of one object: the data of an image. */
export interface StoredObject {
  key: string;
  /** Absent only for `images/<id>`, whose every version is Hangar's own write. */
  version_id?: string;
}

/**
 * Image ids are lowercase UUIDs: the only ids Hangar makes or accepts, and the `id` pattern the image and
 * member schemas declare.
 */
export const IMAGE_ID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
const IMAGE_ID = new RegExp(IMAGE_ID_PATTERN);
export const isImageId = (s: string): boolean => IMAGE_ID.test(s);

/** The one prefix whose objects trigger an import; every key under it is `staging/<image-id>/...`. */
export const STAGING_PREFIX = "staging/";
/** Everything staged for one image (its upload, and nothing else). */
export const stagingPrefix = (id: string): string => `${STAGING_PREFIX}${id}/`;
/** Where the client uploads an image's bytes. */
export const stagingKey = (id: string): string => `${stagingPrefix(id)}upload`;
/** Where the stored image lives. */
export const imageKey = (id: string): string => `images/${id}`;
/** Where an image's data is: the object its import kept, or (converted, or from before versions) `images/<id>`. */
export const storedObject = (image: Pick<ImageRecord, "id" | "stored_object">): StoredObject =>
  image.stored_object ?? { key: imageKey(image.id) };
/**
 * Scratch space of an import: a gzip-wrapped upload whose image is not stored in order is unwrapped
 * here, outside `staging/` so that it fires no import, and deleted once converted.
 */
export const spoolKey = (id: string): string => `spool/${id}`;

/** Parses the image id out of a staging key; undefined for any key Hangar did not generate. */
export function imageIdFromStagingKey(key: string): string | undefined {
  if (!key.startsWith(STAGING_PREFIX)) return undefined;
  const m = /^([0-9a-f-]{36})\/[a-z0-9/-]+$/.exec(key.slice(STAGING_PREFIX.length));
  const id = m?.[1];
  return id !== undefined && isImageId(id) ? id : undefined;
}
