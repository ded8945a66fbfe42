import * as z from "zod";
import { ConflictError, ForbiddenError, InvalidRequestError, LimitExceededError } from "../errors.ts";
import { type Caller, isAdmin } from "./access.ts";
import {
  DYNAMODB_ITEM_BYTES,
  isReservedName,
  MAX_PROPERTIES,
  MAX_RECORD_BYTES,
  MAX_TAGS,
  propertyNameRefusal,
  propertyValue,
  READ_ONLY_FIELDS,
  recordBytes,
  type SettableField,
  settableFields,
} from "./fields.ts";
import type { ImageRecord } from "./image.ts";

/** The media types Glance takes for image updates; any other is refused with 415. */
export const PATCH_MEDIA_TYPES = [
  "application/openstack-images-v2.1-json-patch",
  "application/openstack-images-v2.0-json-patch",
] as const;

/** One JSON-patch operation as Glance accepts it (RFC 6902 subset: add, replace, remove; top-level paths). */
export const PatchOperation = z.object({
  op: z.enum(["add", "replace", "remove"], {
    error: (i) => `Unsupported patch operation: ${JSON.stringify(i.input)}; use add, replace or remove.`,
  }),
  path: z.string(),
  value: z.unknown().optional(),
});
export const PatchDocument = z.array(PatchOperation);
export type PatchOperation = z.infer<typeof PatchOperation>;

/** Fields that only make sense before the bytes arrive (Glance: "can be only replaced for a queued image"). */
const QUEUED_ONLY = new Set<string>(["disk_format", "container_format", "upload_size", "upload_sha256"]);

/** Decodes a one-segment JSON pointer (`/name`, `/a~1b`), or fails like Glance does for deeper paths. */
function pathRoot(path: string): string {
  const segments = path.split("/");
  if (segments.length !== 2 || segments[0] !== "" || segments[1] === "") {
    throw new InvalidRequestError(`Invalid JSON pointer for this resource: '${path}'`, "INVALID_PATCH");
  }
  return (segments[1] ?? "").replace(/~1/g, "/").replace(/~0/g, "~");
}

/** One change to one top-level attribute: what a JSON-patch operation and a key of a create body both are. */
export interface AttributeChange {
  op: PatchOperation["op"];
  name: string;
  value?: unknown;
}

/**
 * Applies a Glance JSON patch to an image and returns the changed fields (with a new `updated_at`), by the
 * rules of `applyImageChanges`. The caller's right to change the image at all is checked before.
 */
export function applyImagePatch(
  image: ImageRecord,
  ops: readonly PatchOperation[],
  caller: Caller,
  options: { maxUploadSize: number; now: string },
): Partial<ImageRecord> {
  // Decoded one at a time, so errors come in the order of the operations.
  function* changes(): Generator<AttributeChange> {
    for (const { op, path, value } of ops) yield { op, name: pathRoot(path), value };
  }
  return applyImageChanges(image, changes(), caller, options);
}

/**
 * Glance's rules for changing an image's attributes, the one rule set of both create (every key of the body
 * an `add` to a blank record) and PATCH: read-only and reserved attributes are refused (403); `add` and
 * `replace` set schema fields whether or not the record shows them (glanceclient sends `replace` for absent
 * ones); extra properties are strings with usable names, `replace`/`remove` of a missing one is a 409, at most
 * 128 of them (413); `public` needs an admin; formats change only while `queued`; and the record must still
 * fit in one DynamoDB item (413). Returns the changed fields with a new `updated_at`.
 */
export function applyImageChanges(
  image: ImageRecord,
  changes: Iterable<AttributeChange>,
  caller: Caller,
  options: { maxUploadSize: number; now: string },
): Partial<ImageRecord> {
  const fields = settableFields(options.maxUploadSize);
  const work: Record<string, unknown> = {};
  const properties = { ...image.properties };
  let propertiesChanged = false;

  for (const { op, name, value } of changes) {
    if (name === "id" || READ_ONLY_FIELDS.has(name)) {
      throw new ForbiddenError(`Attribute '${name}' is read-only.`, "READ_ONLY");
    }
    if (isReservedName(name)) throw new ForbiddenError(`Attribute '${name}' is reserved.`, "RESERVED");
    const isField = Object.hasOwn(fields, name);
    if (!isField) {
      const refusal = propertyNameRefusal(name);
      if (refusal !== undefined) throw new InvalidRequestError(refusal, "INVALID_PROPERTY_NAME");
    }

    if (op === "remove") {
      if (isField) throw new ForbiddenError(`Property ${name} may not be removed.`, "CORE_PROPERTY");
      if (!Object.hasOwn(properties, name)) {
        throw new ConflictError(`Property ${name} does not exist.`, "NO_SUCH_PROPERTY");
      }
      delete properties[name];
      propertiesChanged = true;
      continue;
    }

    if (value === undefined) {
      throw new InvalidRequestError(`Operation '${op}' on '/${name}' needs a value.`, "INVALID_PATCH");
    }
    if (isField) {
      const field = name as SettableField;
      const parsed = fields[field].safeParse(value);
      if (!parsed.success) {
        const why = parsed.error.issues[0]?.message ?? "invalid";
        if (field === "tags" && Array.isArray(value) && value.length > MAX_TAGS) {
          throw new LimitExceededError(`An image may have at most ${MAX_TAGS} tags.`);
        }
        throw new InvalidRequestError(`Invalid value for '${name}': ${why}`);
      }
      if (QUEUED_ONLY.has(field) && image.status !== "queued") {
        throw new ForbiddenError(`Attribute ${field} can be only replaced for a queued image.`, "NOT_QUEUED");
      }
      if (
        field === "visibility" &&
        parsed.data === "public" &&
        image.visibility !== "public" &&
        !isAdmin(caller)
      ) {
        throw new ForbiddenError("You are not authorized to complete publicize_image action.");
      }
      if (field === "owner" && parsed.data !== image.owner && !isAdmin(caller)) {
        throw new ForbiddenError("Only an admin may change the owner of an image.");
      }
      work[field] =
        field === "tags"
          ? [...new Set(parsed.data as string[])]
          : field === "upload_sha256" && typeof parsed.data === "string"
            ? parsed.data.toLowerCase()
            : parsed.data;
      continue;
    }

    // An extra property.
    if (op === "replace" && !Object.hasOwn(properties, name)) {
      throw new ConflictError(`Property ${name} does not exist.`, "NO_SUCH_PROPERTY");
    }
    const parsed = propertyValue.safeParse(value);
    if (!parsed.success) {
      throw new InvalidRequestError(
        `Invalid value for '${name.slice(0, 255)}': extra properties are strings of at most 65535 characters.`,
      );
    }
    if (!Object.hasOwn(properties, name) && Object.keys(properties).length >= MAX_PROPERTIES) {
      throw new LimitExceededError(`An image may have at most ${MAX_PROPERTIES} extra properties.`);
    }
    properties[name] = parsed.data;
    propertiesChanged = true;
  }

  const changed: Partial<ImageRecord> = {
    ...(work as Partial<ImageRecord>),
    ...(propertiesChanged ? { properties } : {}),
    updated_at: options.now,
  };
  const bytes = recordBytes({ ...image, ...changed });
  if (bytes > MAX_RECORD_BYTES) {
    throw new LimitExceededError(
      `The image would take ${bytes} bytes of attributes and extra properties; at most ${MAX_RECORD_BYTES} fit in one record (DynamoDB stores at most ${DYNAMODB_ITEM_BYTES / 1024} KB per item).`,
    );
  }
  return changed;
}
