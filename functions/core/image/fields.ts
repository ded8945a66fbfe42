/** Glance's limits: a property value is a string of at most 65535 characters, names and tags at most 255. */
export const MAX_PROPERTY_VALUE = 65535;
export const MAX_NAME = 255;
/** Glance's default `image_tag_quota` and `image_property_quota`. */
export const MAX_TAGS = 128;
export const MAX_PROPERTIES = 128;

/**
 * Extra property names that are refused outright (400): the empty name (no storage takes it as a map key) and
 * names that are not data to JavaScript objects or to the DynamoDB marshaller (`__proto__` would replace a
 * plain object's prototype; `constructor` makes the marshaller misjudge the properties map).
 */
const UNUSABLE_NAMES: ReadonlySet<string> = new Set(["", "__proto__", "constructor"]);

/** Why a name cannot be an extra property's name, or undefined when it can. */
export function propertyNameRefusal(name: string): string | undefined {
  if (UNUSABLE_NAMES.has(name)) {
    return `Property name '${name}' is not allowed: extra property names are 1 to ${MAX_NAME} characters, and not __proto__ or constructor.`;
  }
  if (name.length > MAX_NAME) return `Property name '${name.slice(0, 40)}…' is longer than ${MAX_NAME}.`;
  return undefined;
}

/** DynamoDB's limit on one item: attribute names and values, in UTF-8 bytes. */
export const DYNAMODB_ITEM_BYTES = 400 * 1024;
/**
 * What an image record may take when a client creates or changes it. The rest of the item is kept for what
 * is stored beside the record (keys, index keys, quota held) and for what the importer adds later (digests,
 * a failure message, import progress), a few KB at most.
 */
export const MAX_RECORD_BYTES = 384 * 1024;

const utf8 = new TextEncoder();

/**
 * A record's size as stored, over-estimated: its JSON in UTF-8. JSON spends at least what DynamoDB does on
 * every name and value (quotes, colons and commas against DynamoDB's per-element byte; a number's digits
 * against its at most 21 bytes), so a record under the limit here is under it in the table.
 */
export function recordBytes(record: object): number {
  return utf8.encode(JSON.stringify(record)).byteLength;
}
