import * as z from "zod/mini";
import { ConflictError, ForbiddenError, InvalidRequestError, LimitExceededError } from "../errors.ts";
import { once } from "../once.ts";
import { type Caller, isAdmin } from "./access.ts";
import { fieldInfo, imageCatalogue, type SettableField } from "./catalogue.ts";
import {
  DYNAMODB_ITEM_BYTES,
  MAX_PROPERTIES,
  MAX_RECORD_BYTES,
  MAX_TAGS,
  propertyNameRefusal,
  recordBytes,
} from "./fields.ts";
import type { ImageRecord } from "./image.ts";

/** The media types Glance takes for image updates; any other is refused with 415. */
export const PATCH_MEDIA_TYPES = [
  "application/openstack-images-v2.1-json-patch",
  "application/openstack-images-v2.0-json-patch",
] as const;

/** One JSON-patch operation as Glance accepts it (RFC 6902 subset: add, replace, remove; top-level paths). */
export const PatchOperation = once(() =>
  z.object({
    op: z.enum(["add", "replace", "remove"], {
      error: (i) => `Unsupported patch operation: ${JSON.stringify(i.input)}; use add, replace or remove.`,
    }),
    path: z.string(),
    value: z.optional(z.unknown()),
  }),
);
export const PatchDocument = once(() => z.array(PatchOperation()));
export type PatchOperation = z.infer<ReturnType<typeof PatchOperation>>;

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

/** What a change is judged against: the image as it was, who asks, and the deployment's ceiling. */
interface ChangeContext {
  image: ImageRecord;
  caller: Caller;
  maxUploadSize: number;
}

/** The changes made so far: attributes set, and the extra properties as they now are. */
interface Draft {
  fields: Partial<Record<SettableField, unknown>>;
  properties: Record<string, string>;
  propertiesChanged: boolean;
}

/**
 * Glance's rules for changing an image's attributes, the one rule set of both create (every key of the body
 * an `add` to a blank record) and PATCH: read-only and reserved attributes are refused (403); `add` and
 * `replace` set schema fields whether or not the record shows them (glanceclient sends `replace` for absent
 * ones); extra properties are strings with usable names, `replace`/`remove` of a missing one is a 409, at most
 * 128 of them (413); `public` needs an admin; formats change only while `queued`; and the record must still
 * fit in one DynamoDB item (413). Who may write what comes from the image catalogue (`catalogue.ts`).
 * Returns the changed fields with a new `updated_at`.
 */
export function applyImageChanges(
  image: ImageRecord,
  changes: Iterable<AttributeChange>,
  caller: Caller,
  options: { maxUploadSize: number; now: string },
): Partial<ImageRecord> {
  const context: ChangeContext = { image, caller, maxUploadSize: options.maxUploadSize };
  const draft: Draft = { fields: {}, properties: { ...image.properties }, propertiesChanged: false };
  for (const change of changes) {
    const access = fieldInfo(change.name)?.access;
    if (access === "read-only" || access === "create-only") {
      throw new ForbiddenError(`Attribute '${change.name}' is read-only.`, "READ_ONLY");
    }
    if (access === "reserved")
      throw new ForbiddenError(`Attribute '${change.name}' is reserved.`, "RESERVED");
    if (access === "settable") setField(draft, change as AttributeChange & { name: SettableField }, context);
    else setProperty(draft, change);
  }
  const changed: Partial<ImageRecord> = {
    ...(draft.fields as Partial<ImageRecord>),
    ...(draft.propertiesChanged ? { properties: draft.properties } : {}),
    updated_at: options.now,
  };
  checkRecordSize({ ...image, ...changed });
  return changed;
}

function needsValue({ op, name, value }: AttributeChange): void {
  if (value === undefined) {
    throw new InvalidRequestError(`Operation '${op}' on '/${name}' needs a value.`, "INVALID_PATCH");
  }
}

/** Sets one of the catalogue's settable attributes (they are never removed). */
function setField(draft: Draft, change: AttributeChange & { name: SettableField }, context: ChangeContext) {
  const { op, name: field, value } = change;
  if (op === "remove") throw new ForbiddenError(`Property ${field} may not be removed.`, "CORE_PROPERTY");
  needsValue(change);
  const parsed = imageCatalogue().SETTABLE_FIELDS[field].safeParse(value);
  if (!parsed.success) {
    if (field === "tags" && Array.isArray(value) && value.length > MAX_TAGS) {
      throw new LimitExceededError(`An image may have at most ${MAX_TAGS} tags.`);
    }
    throw new InvalidRequestError(
      `Invalid value for '${field}': ${parsed.error.issues[0]?.message ?? "invalid"}`,
    );
  }
  checkFieldRules(field, parsed.data, context);
  draft.fields[field] = normalized(field, parsed.data);
}

/** The rules beyond a value's type: the deployment's upload ceiling, queued-only fields, and who may publish or give away. */
function checkFieldRules(
  field: SettableField,
  value: unknown,
  { image, caller, maxUploadSize }: ChangeContext,
) {
  if (field === "upload_size" && typeof value === "number" && value > maxUploadSize) {
    throw new InvalidRequestError(`Invalid value for 'upload_size': at most ${maxUploadSize} bytes.`);
  }
  if (fieldInfo(field)?.queuedOnly && image.status !== "queued") {
    throw new ForbiddenError(`Attribute ${field} can be only replaced for a queued image.`, "NOT_QUEUED");
  }
  if (isAdmin(caller)) return;
  if (field === "visibility" && value === "public" && image.visibility !== "public") {
    throw new ForbiddenError("You are not authorized to complete publicize_image action.");
  }
  if (field === "owner" && value !== image.owner) {
    throw new ForbiddenError("Only an admin may change the owner of an image.");
  }
}

/** Tags are a set; a declared sha256 is kept in lowercase. */
function normalized(field: SettableField, value: unknown): unknown {
  if (field === "tags") return [...new Set(value as string[])];
  if (field === "upload_sha256" && typeof value === "string") return value.toLowerCase();
  return value;
}

/** Adds, replaces or removes an extra property. */
function setProperty(draft: Draft, change: AttributeChange): void {
  const { op, name, value } = change;
  const refusal = propertyNameRefusal(name);
  if (refusal !== undefined) throw new InvalidRequestError(refusal, "INVALID_PROPERTY_NAME");
  const exists = Object.hasOwn(draft.properties, name);
  const missing = () => new ConflictError(`Property ${name} does not exist.`, "NO_SUCH_PROPERTY");
  if (op === "remove") {
    if (!exists) throw missing();
    delete draft.properties[name];
    draft.propertiesChanged = true;
    return;
  }
  needsValue(change);
  if (op === "replace" && !exists) throw missing();
  const parsed = imageCatalogue().propertyValue.safeParse(value);
  if (!parsed.success) {
    throw new InvalidRequestError(
      `Invalid value for '${name.slice(0, 255)}': extra properties are strings of at most 65535 characters.`,
    );
  }
  if (!exists && Object.keys(draft.properties).length >= MAX_PROPERTIES) {
    throw new LimitExceededError(`An image may have at most ${MAX_PROPERTIES} extra properties.`);
  }
  draft.properties[name] = parsed.data;
  draft.propertiesChanged = true;
}

/** The record must still fit in one DynamoDB item. */
function checkRecordSize(record: ImageRecord): void {
  const bytes = recordBytes(record);
  if (bytes > MAX_RECORD_BYTES) {
    throw new LimitExceededError(
      `The image would take ${bytes} bytes of attributes and extra properties; at most ${MAX_RECORD_BYTES} fit in one record (DynamoDB stores at most ${DYNAMODB_ITEM_BYTES / 1024} KB per item).`,
    );
  }
}
