import * as z from "zod/mini";
import { imageCatalogue } from "../core/image/catalogue.ts";
import { MAX_NAME, MAX_PROPERTIES, MAX_RECORD_BYTES } from "../core/image/fields.ts";
import { IMAGE_ID_PATTERN } from "../core/image/image.ts";
import { MEMBER_STATUSES } from "../core/image/members.ts";
import { PatchDocument } from "../core/image/patch.ts";
import { once } from "../core/once.ts";

/**
 * The request and response schemas of the HTTP API. Requests are validated with them; `/v2/schemas/member(s)`
 * and the OpenAPI document (`GET /openapi.json`, `docs/openapi.json`) are generated from the same objects.
 */

/**
 * `POST /v2/images`, as documented: `id` and the settable attributes of the image catalogue, each optional
 * (`owner` may be null: the caller's project), plus extra string properties. The core applies the rules.
 */
export const ImageCreate = once(() => {
  const { ImageJson, propertyValue, SETTABLE_FIELDS } = imageCatalogue();
  return z
    .catchall(
      z.object({
        id: z.optional(ImageJson.shape.id),
        ...Object.fromEntries(
          Object.entries(SETTABLE_FIELDS).map(([name, schema]) => [name, z.optional(schema)]),
        ),
        owner: z.optional(z.nullable(SETTABLE_FIELDS.owner)),
      }),
      propertyValue,
    )
    .check(
      z.describe(
        `A new image, checked by the same rules as a PATCH: keys not listed are extra string properties (at most ${MAX_PROPERTIES}; names of 1 to 255 characters, not __proto__ or constructor; values of at most 65535 characters); read-only attributes and the reserved names deleted, deleted_at, location, properties and os_glance_* are refused with 403; the whole record must fit in one database item (at most ${MAX_RECORD_BYTES} bytes as JSON). upload_size is at most the deployment's max_upload_size (/v2/info/import).`,
      ),
    );
});

/**
 * `POST /v2/images` as the router validates it: a JSON object, passed whole to the core, which applies the
 * catalogue's rules key by key (so create refuses what PATCH refuses, with the same statuses). Kept as sent:
 * an own `__proto__` key must reach the rules to be refused, not become a prototype.
 */
export const NewImageBody = once(() =>
  z.custom<Record<string, unknown>>(
    (v) => typeof v === "object" && v !== null && !Array.isArray(v),
    "The request body must be a JSON object.",
  ),
);

/** `PATCH /v2/images/{id}` with `application/openstack-images-v2.1-json-patch`. */
export const ImagePatch = once(() =>
  PatchDocument().check(
    z.describe(
      "JSON patch (add, replace, remove) on top-level image attributes; send it as application/openstack-images-v2.1-json-patch.",
    ),
  ),
);

export const MemberCreate = once(() =>
  z.object({
    member: z
      .string()
      .check(z.minLength(1), z.maxLength(MAX_NAME), z.describe("The project to share the image with")),
  }),
);

export const MemberUpdate = once(() =>
  z.object({
    status: z.enum(MEMBER_STATUSES).check(z.describe("The member project's decision on the share")),
  }),
);

export const ImportRequest = once(() =>
  z.object({
    method: z.object({
      name: z.string().check(z.describe("Import method; Hangar offers web-download (see /v2/info/import)")),
      uri: z
        .optional(z.string().check(z.maxLength(2048)))
        .check(z.describe("For web-download: the http(s) URL to fetch")),
    }),
  }),
);

const described = <T extends z.ZodMiniType>(schema: T, description: string): T =>
  schema.check(z.describe(description));

export const MemberJson = once(() => {
  const glanceTimeText = z
    .string()
    .check(z.describe("UTC time, ISO 8601 without fractions (e.g. 2026-01-31T12:00:00Z)"));
  return z.object({
    created_at: described(glanceTimeText, "Date and time of image member creation"),
    image_id: z
      .string()
      .check(z.regex(new RegExp(IMAGE_ID_PATTERN)), z.describe("An identifier for the image")),
    member_id: described(z.string(), "An identifier for the image member (project id)"),
    schema: described(z.string(), "The member schema's path"),
    status: described(z.enum(MEMBER_STATUSES), "The status of this image member"),
    updated_at: described(glanceTimeText, "Date and time of last modification of image member"),
  });
});

export const MembersJson = once(() => z.object({ members: z.array(MemberJson()), schema: z.string() }));

export const UsageJson = once(() => {
  const counter = z.object({
    limit: described(z.number().check(z.int()), "-1: no limit"),
    usage: z.number().check(z.int()),
  });
  return z.object({
    project_id: described(z.string(), "Hangar: the project the counters belong to"),
    usage: z.object({
      image_count_total: counter,
      image_size_total: counter,
      image_stage_total: counter,
      image_count_uploading: counter,
    }),
  });
});

export const QuotasJson = once(() => z.object({ projects: z.array(UsageJson()) }));

export const ImportInfoJson = once(() =>
  z.object({
    "import-methods": z.object({
      description: z.string(),
      type: z.literal("array"),
      value: z.array(z.string()),
    }),
    hangar: described(
      z.object({
        preferred_format: described(z.string(), "Format images are stored in when conversion is needed"),
        accepted_formats: described(z.array(z.string()), "Formats stored as uploaded, without conversion"),
        max_virtual_size: described(z.number().check(z.int()), "Largest virtual size accepted, bytes"),
        max_gzip_ratio: described(z.number().check(z.int()), "Largest expansion of gzip-compressed uploads"),
        max_upload_size: described(z.number().check(z.int()), "Largest declared upload_size, bytes"),
        web_download: z.object({
          max_bytes: z.number().check(z.int()),
          timeout_seconds: z.number().check(z.int()),
        }),
      }),
      "Hangar's operator policy: shown, never sent back by clients",
    ),
  }),
);

export const StoresJson = once(() =>
  z.object({
    stores: z.array(z.object({ id: z.string(), description: z.string(), default: z.optional(z.boolean()) })),
  }),
);

export const ErrorJson = once(() =>
  z.object({
    error: z.object({
      code: z.number().check(z.int()),
      title: z.string(),
      message: z.string(),
      reason: described(z.string(), "Stable machine-readable code, e.g. READ_ONLY, NOT_FOUND, FETCH_FAILED"),
    }),
  }),
);

/** A Glance-style schema document (`name`, `properties`) generated from a zod object. */
function glanceSchema(name: string, schema: z.ZodMiniType) {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io: "output" }) as Record<string, unknown>;
  return { name, ...rest };
}

/** `/v2/schemas/member`: glanceclient validates member responses against it. Generated when first served. */
export const memberSchema = once(() => glanceSchema("member", MemberJson()));

/** `/v2/schemas/members`. */
export const membersSchema = once(() => ({
  ...glanceSchema("members", MembersJson()),
  links: [{ rel: "schema", href: "{schema}" }],
}));
