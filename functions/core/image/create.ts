import { ForbiddenError, InvalidRequestError } from "../errors.ts";
import { type Caller, isAdmin } from "./access.ts";
import { type ImageRecord, isImageId } from "./image.ts";
import { type AttributeChange, applyImageChanges } from "./patch.ts";

/**
 * A new image as the client sent it: Glance's fields and extra properties by name, and optionally `id`
 * (a UUID). Checked by the same rules as a patch (`applyImageChanges`).
 */
export type NewImage = Readonly<Record<string, unknown>>;

/** A record in `queued` with nothing set: what every create starts from. */
export function blankRecord(id: string, owner: string, at: string): ImageRecord {
  return {
    id,
    name: null,
    status: "queued",
    visibility: "shared",
    protected: false,
    os_hidden: false,
    owner,
    disk_format: null,
    container_format: null,
    size: null,
    virtual_size: null,
    checksum: null,
    os_hash_algo: null,
    os_hash_value: null,
    min_disk: 0,
    min_ram: 0,
    tags: [],
    created_at: at,
    updated_at: at,
    properties: {},
    upload_size: null,
    upload_sha256: null,
    source_format: null,
    converted: null,
    failure: null,
    import_progress: null,
    import_lease_until: null,
  };
}

/**
 * Who creates the image: the caller, or for an admin naming another `owner`, the caller acting in that
 * project (so the record is that project's from the start, with its upload link).
 */
export function creatorOf(input: NewImage, caller: Caller): Caller {
  return typeof input.owner === "string" && isAdmin(caller) ? { ...caller, projectId: input.owner } : caller;
}

/**
 * The record a create makes from the client's body: every key is an `add` to a blank record, by the rules
 * of a patch, so create accepts exactly what PATCH does. An absent or null `owner` is the creator's project;
 * another project's needs an admin; `id`, when given, must be a lowercase UUID (otherwise `newId()`).
 */
export function newImageRecord(
  input: NewImage,
  creator: Caller,
  options: { newId: () => string; now: string; maxUploadSize: number },
): ImageRecord {
  const { id, ...fields } = input;
  if (id !== undefined && (typeof id !== "string" || !isImageId(id))) {
    throw new InvalidRequestError("Invalid image: id must be a lowercase UUID.");
  }
  const owner = fields.owner;
  if (owner !== undefined && owner !== null && owner !== creator.projectId && !isAdmin(creator)) {
    throw new ForbiddenError("You are not permitted to create images owned by another project.");
  }
  const blank = blankRecord(id ?? options.newId(), creator.projectId, options.now);
  const changes: AttributeChange[] = Object.entries(fields)
    .filter(([name, value]) => value !== undefined && !(name === "owner" && value === null))
    .map(([name, value]) => ({ op: "add", name, value }));
  return { ...blank, ...applyImageChanges(blank, changes, creator, options) };
}
