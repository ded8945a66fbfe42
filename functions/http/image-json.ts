import * as z from "zod/mini";
import { type ImageJson, imageCatalogue, type ShownField } from "../core/image/catalogue.ts";
import type { ImageRecord } from "../core/image/image.ts";
import { once } from "../core/once.ts";
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

/** A time as Glance shows it: ISO 8601 without fractions of a second. */
export const glanceTime = (iso: string) => iso.replace(/\.\d{3}Z$/, "Z");

/** The shown attributes that are not the record's own value: times in Glance's form, links, quota held. */
const COMPUTED: Partial<Record<ShownField, (image: ImageRecord, upload: UploadLink | undefined) => unknown>> =
  {
    created_at: (image) => glanceTime(image.created_at),
    updated_at: (image) => glanceTime(image.updated_at),
    self: (image) => `/v2/images/${image.id}`,
    file: (image) => `/v2/images/${image.id}/file`,
    schema: () => "/v2/schemas/image",
    upload: (_, upload) => (upload ? uploadJson(upload) : null),
    // Staged bytes held against the quota while queued (declared size) or importing (actual size).
    staged_size: (image) =>
      image.status === "queued" || image.status === "importing" ? heldBy(image).image_stage_total : null,
  };

/**
 * An image as Glance v2 shows it, plus Hangar's fields: exactly the catalogue's shown attributes (what
 * `/v2/schemas/image` declares) and the extra properties; nothing else of the record is ever shown.
 */
export function imageJson(image: ImageRecord, upload?: UploadLink): ImageJson {
  const json: Record<string, unknown> = { ...image.properties };
  const record = image as unknown as Record<string, unknown>;
  for (const name of imageCatalogue().SHOWN_FIELDS) {
    const compute = COMPUTED[name];
    json[name] = compute ? compute(image, upload) : (record[name] ?? null);
  }
  return json as ImageJson;
}

/** A property of a JSON Schema document, as far as the tests and the OpenAPI document look into one. */
export interface JsonSchemaProperty {
  type?: string | string[];
  readOnly?: boolean;
  items?: { type?: string };
  [keyword: string]: unknown;
}

const SAFE_INTEGER_BOUNDS = new Set([Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]);

/**
 * JSON Schema in Glance's dialect: a nullable value is `type: ["null", T]` (with `null` in its enum), which
 * glanceclient reads to type its CLI options, not zod's `anyOf [T, null]`; zod's implicit safe-integer bounds
 * are left out. Applied to every nested schema.
 */
function glanceDialect(json: JsonSchemaProperty): JsonSchemaProperty {
  let out: JsonSchemaProperty = { ...json };
  const anyOf = out.anyOf as JsonSchemaProperty[] | undefined;
  const [only, ...more] = anyOf?.filter((s) => s.type !== "null") ?? [];
  if (anyOf && only && more.length === 0 && anyOf.length === 2 && typeof only.type === "string") {
    const { anyOf: _replaced, ...rest } = out;
    out = { ...rest, ...only, type: ["null", only.type] };
    if (Array.isArray(only.enum)) out.enum = [null, ...only.enum];
  }
  if (Array.isArray(out.type) && out.type.includes("null")) {
    out.type = ["null", ...out.type.filter((t) => t !== "null")];
  }
  for (const bound of ["minimum", "maximum"] as const) {
    if (SAFE_INTEGER_BOUNDS.has(out[bound] as number)) delete out[bound];
  }
  if (out.properties) {
    const nested = out.properties as Record<string, JsonSchemaProperty>;
    out.properties = Object.fromEntries(Object.entries(nested).map(([k, v]) => [k, glanceDialect(v)]));
  }
  return out;
}

function glanceProperty(schema: z.ZodMiniType): JsonSchemaProperty {
  const { $schema: _drop, ...json } = z.toJSONSchema(schema, { io: "output" }) as JsonSchemaProperty;
  return glanceDialect(json);
}

/** The catalogue's shown attributes as Glance schema properties, with their descriptions and read-only flags. */
function imageProperties(): Record<string, JsonSchemaProperty> {
  const { ImageJson, imageFieldInfo, SHOWN_FIELDS } = imageCatalogue();
  return Object.fromEntries(
    SHOWN_FIELDS.map((name) => {
      const schema = ImageJson.shape[name];
      const info = imageFieldInfo.get(schema);
      return [
        name,
        {
          ...glanceProperty(schema),
          ...(info?.access === "read-only" ? { readOnly: true } : {}),
          description: info?.description,
        },
      ];
    }),
  );
}

/**
 * `/v2/schemas/image`: Glance's image schema with Hangar's fields declared, so strict clients validate them,
 * generated from the image catalogue. glanceclient turns every property into a CLI option; names that clash
 * with its options are never used. Generated when first served, not at every cold start.
 */
export const imageSchema = once(() => ({
  name: "image",
  additionalProperties: { type: "string" },
  properties: imageProperties(),
  links: [
    { rel: "self", href: "{self}" },
    { rel: "enclosure", href: "{file}" },
    { rel: "describedby", href: "{schema}" },
  ],
}));

export const imagesSchema = once(() => ({
  name: "images",
  properties: {
    images: { type: "array", items: imageSchema() },
    schema: { type: "string" },
    first: { type: "string" },
    next: { type: "string" },
  },
  links: [
    { rel: "first", href: "{first}" },
    { rel: "next", href: "{next}" },
    { rel: "describedby", href: "{schema}" },
  ],
}));
