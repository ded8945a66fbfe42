import * as z from "zod/mini";
import {
  ErrorJson,
  ImageCreate,
  ImagePatch,
  ImportInfoJson,
  ImportRequest,
  MemberCreate,
  MemberJson,
  MembersJson,
  MemberUpdate,
  QuotasJson,
  StoresJson,
  UsageJson,
} from "./api-schemas.ts";
import { imageSchema, imagesSchema } from "./image-json.ts";
import { MAX_BODY_BYTES } from "./limits.ts";
import { LimitsBody } from "./routes/quotas.ts";

const jsonSchema = (s: z.ZodMiniType, io: "input" | "output") => {
  const { $schema: _drop, ...rest } = z.toJSONSchema(s, { io, unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return rest;
};

/** Glance's schema documents carry `name` and hypermedia `links`; OpenAPI wants plain JSON Schema. */
const plain = ({ name: _n, links: _l, ...rest }: Record<string, unknown>) => rest;

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (name: string, description: string) => ({
  description,
  content: { "application/json": { schema: ref(name) } },
});
const err = (description: string) => json("Error", description);
const noContent = (description: string) => ({ description });

const idParam = { name: "id", in: "path", required: true, schema: { type: "string", format: "uuid" } };
const memberParam = {
  name: "member",
  in: "path",
  required: true,
  schema: { type: "string", minLength: 1, maxLength: 255 },
};
const projectSchema = { type: "string", minLength: 1, maxLength: 255 };
const tagParam = { name: "tag", in: "path", required: true, schema: { type: "string", maxLength: 255 } };
const q = (name: string, description: string, schema: Record<string, unknown> = { type: "string" }) => ({
  name,
  in: "query",
  required: false,
  description,
  schema,
});

/** Bodies are JSON: another media type is refused rather than read as an empty object. */
const NOT_JSON = err("A body sent with a media type other than application/json");

/** Every route that reads a body answers 413 beyond the limit, as API Gateway does. */
const BODY_TOO_LARGE = `The request body is over ${MAX_BODY_BYTES} bytes`;

const STD_ERRORS = {
  "401": err("No or invalid token"),
  "403": err("Not permitted (policy, read-only attribute, protected image)"),
  "404": err("No such image (an id that is not a UUID names none), or not visible to the caller"),
};

/**
 * The OpenAPI 3.1 description of Hangar's HTTP API, built from the schemas the code validates and serves.
 * Served at `GET /openapi.json` and written to `docs/openapi.json` by `npm run openapi`.
 */
export function openApiDocument() {
  return {
    openapi: "3.1.0",
    info: {
      title: "Hangar image API",
      version: "2.16",
      description:
        "Glance v2-shaped image service. Image bytes never pass through the API: create an image, then PUT the bytes to its `upload` link; the importer moves it queued → importing → active | killed.",
    },
    components: {
      securitySchemes: {
        token: { type: "apiKey", in: "header", name: "X-Auth-Token" },
        bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" },
      },
      schemas: {
        Image: plain(imageSchema() as unknown as Record<string, unknown>),
        Images: {
          ...plain(imagesSchema() as unknown as Record<string, unknown>),
          properties: { ...imagesSchema().properties, images: { type: "array", items: ref("Image") } },
        },
        ImageCreate: jsonSchema(ImageCreate(), "input"),
        ImagePatch: jsonSchema(ImagePatch(), "input"),
        Member: jsonSchema(MemberJson(), "output"),
        Members: jsonSchema(MembersJson(), "output"),
        MemberCreate: jsonSchema(MemberCreate(), "input"),
        MemberUpdate: jsonSchema(MemberUpdate(), "input"),
        ImportRequest: jsonSchema(ImportRequest(), "input"),
        ImportInfo: jsonSchema(ImportInfoJson(), "output"),
        Stores: jsonSchema(StoresJson(), "output"),
        Usage: jsonSchema(UsageJson(), "output"),
        Quotas: jsonSchema(QuotasJson(), "output"),
        LimitsUpdate: jsonSchema(LimitsBody(), "input"),
        Error: jsonSchema(ErrorJson(), "output"),
      },
    },
    security: [{ token: [] }, { bearer: [] }],
    paths: {
      "/versions": {
        get: {
          summary: "API versions (no token)",
          security: [],
          responses: { "200": { description: "Versions document" } },
        },
      },
      "/openapi.json": {
        get: {
          summary: "This document (no token)",
          security: [],
          responses: { "200": { description: "OpenAPI 3.1" } },
        },
      },
      "/v2/images": {
        get: {
          summary: "List images",
          description:
            "Glance's filters and sorting. Default list: own, public and accepted shared images, no community or os_hidden ones. `next`/`first` are relative paths.",
          parameters: [
            q("limit", "Page size, default 25, at most 1000", { type: "integer", minimum: 0 }),
            q("marker", "Id of the last image of the previous page (a UUID; anything else is 400)", {
              type: "string",
              format: "uuid",
            }),
            q("sort_key", "Repeatable: name, status, created_at, updated_at, size, id, ..."),
            q("sort_dir", "Repeatable: asc or desc"),
            q("sort", "key:dir,key:dir (not with sort_key/sort_dir)"),
            q("visibility", "public, private, shared, community or all"),
            q("member_status", "pending, accepted (default), rejected or all"),
            q("owner", "Owner project"),
            q("name", "Exact name, or in:a,b"),
            q("status", "Status, or in:a,b"),
            q("id", "in:id1,id2"),
            q("tag", "Repeatable; every tag must be present"),
            q("size_min", "Bytes", { type: "integer" }),
            q("size_max", "Bytes", { type: "integer" }),
            q("disk_format", "Disk format, or in:a,b"),
            q("container_format", "Container format, or in:a,b"),
            q("protected", "true or false"),
            q("os_hidden", "true lists only hidden images"),
            q("created_at", "gt:|gte:|lt:|lte:|eq:|neq: ISO 8601 time"),
            q("updated_at", "gt:|gte:|lt:|lte:|eq:|neq: ISO 8601 time"),
          ],
          responses: { "200": json("Images", "A page of images"), "400": err("Bad filter or sort") },
        },
        post: {
          summary: "Create an image (queued, with its upload link)",
          requestBody: { required: true, content: { "application/json": { schema: ref("ImageCreate") } } },
          responses: {
            "201": json("Image", "The image, with `upload` to follow"),
            "400": err("Invalid field or extra property name"),
            "401": err("No or invalid token"),
            "403": err(
              "A reader's token, a read-only or reserved attribute, or public visibility without admin (the rules of PATCH)",
            ),
            "413": err(
              `More than 128 tags or extra properties, a record over the size one database item holds, or a body over ${MAX_BODY_BYTES} bytes`,
            ),
            "415": NOT_JSON,
          },
        },
      },
      "/v2/images/{id}": {
        parameters: [idParam],
        get: { summary: "Show an image", responses: { "200": json("Image", "The image"), ...STD_ERRORS } },
        patch: {
          summary: "Update an image with a JSON patch",
          requestBody: {
            required: true,
            content: { "application/openstack-images-v2.1-json-patch": { schema: ref("ImagePatch") } },
          },
          responses: {
            "200": json("Image", "The updated image"),
            "400": err("Invalid value or pointer"),
            ...STD_ERRORS,
            "409": err("Extra property missing, or the image changed meanwhile"),
            "413": err(
              `More than 128 tags or extra properties, a record over the size one database item holds, or a body over ${MAX_BODY_BYTES} bytes`,
            ),
            "415": err("Not the JSON-patch media type"),
          },
        },
        delete: {
          summary: "Delete an image (not if protected)",
          responses: { "204": noContent("Deleted"), ...STD_ERRORS },
        },
      },
      "/v2/images/{id}/file": {
        parameters: [idParam],
        get: {
          summary: "Download: redirect to a presigned GET (application/octet-stream)",
          responses: {
            "302": noContent("Location: the presigned link"),
            ...STD_ERRORS,
            "409": err("The image has no data yet"),
          },
        },
        put: {
          summary: "Refused: bytes go to the image's upload link",
          responses: {
            "204": noContent("An empty body: nothing sent, the image stays queued with its link"),
            "405": err("Use the upload link"),
          },
        },
      },
      "/v2/images/{id}/tags/{tag}": {
        parameters: [idParam, tagParam],
        put: { summary: "Add a tag", responses: { "204": noContent("Added"), ...STD_ERRORS } },
        delete: { summary: "Remove a tag", responses: { "204": noContent("Removed"), ...STD_ERRORS } },
      },
      "/v2/images/{id}/members": {
        parameters: [idParam],
        get: {
          summary: "List members (the owner sees all, a member itself)",
          responses: { "200": json("Members", "Members"), ...STD_ERRORS },
        },
        post: {
          summary: "Share a shared image with a project (status pending)",
          requestBody: { required: true, content: { "application/json": { schema: ref("MemberCreate") } } },
          responses: {
            "200": json("Member", "The new member"),
            ...STD_ERRORS,
            "409": err("Already a member"),
            "413": err(`Too many members, or a body over ${MAX_BODY_BYTES} bytes`),
            "415": NOT_JSON,
          },
        },
      },
      "/v2/images/{id}/members/{member}": {
        parameters: [idParam, memberParam],
        get: { summary: "Show a member", responses: { "200": json("Member", "The member"), ...STD_ERRORS } },
        put: {
          summary: "Accept, reject or re-pend a share (the member project only)",
          requestBody: { required: true, content: { "application/json": { schema: ref("MemberUpdate") } } },
          responses: {
            "200": json("Member", "The member"),
            ...STD_ERRORS,
            "413": err(BODY_TOO_LARGE),
            "415": NOT_JSON,
          },
        },
        delete: {
          summary: "Stop sharing (owner)",
          responses: { "204": noContent("Removed"), ...STD_ERRORS },
        },
      },
      "/v2/images/{id}/actions/deactivate": {
        parameters: [idParam],
        post: {
          summary: "Deactivate (admin or owner)",
          responses: { "204": noContent("Done"), ...STD_ERRORS },
        },
      },
      "/v2/images/{id}/actions/reactivate": {
        parameters: [idParam],
        post: {
          summary: "Reactivate (admin or owner)",
          responses: { "204": noContent("Done"), ...STD_ERRORS },
        },
      },
      "/v2/images/{id}/import": {
        parameters: [idParam],
        post: {
          summary: "Import by web-download: Hangar fetches the URL into the image's staging key",
          requestBody: { required: true, content: { "application/json": { schema: ref("ImportRequest") } } },
          responses: {
            "202": noContent("Fetch started; the image goes active or killed (FETCH_FAILED)"),
            "400": err("Unsupported method, or a URL whose scheme or addresses are refused"),
            ...STD_ERRORS,
            "409": err("The image is not queued"),
            "413": err(BODY_TOO_LARGE),
            "415": NOT_JSON,
          },
        },
      },
      "/v2/schemas/image": {
        get: { summary: "Image schema", responses: { "200": { description: "JSON Schema" } } },
      },
      "/v2/schemas/images": {
        get: { summary: "Images schema", responses: { "200": { description: "JSON Schema" } } },
      },
      "/v2/schemas/member": {
        get: { summary: "Member schema", responses: { "200": { description: "JSON Schema" } } },
      },
      "/v2/schemas/members": {
        get: { summary: "Members schema", responses: { "200": { description: "JSON Schema" } } },
      },
      "/v2/info/import": {
        get: {
          summary: "Import methods and operator policy",
          responses: { "200": json("ImportInfo", "Info") },
        },
      },
      "/v2/info/stores": { get: { summary: "Stores", responses: { "200": json("Stores", "Stores") } } },
      "/v2/info/usage": {
        get: {
          summary: "The caller's usage and limits (admins: any project's, with project_id)",
          parameters: [{ name: "project_id", in: "query", required: false, schema: projectSchema }],
          responses: { "200": json("Usage", "Usage"), ...STD_ERRORS },
        },
      },
      "/v2/quotas": {
        get: {
          summary: "Every project's usage (staged bytes included) and limits; admins only",
          responses: { "200": json("Quotas", "Usage of every project"), ...STD_ERRORS },
        },
      },
      "/v2/quotas/reconcile": {
        post: {
          summary:
            "Recompute usage from image records and storage, report drift, repair it (repair=false: report only); admins only",
          parameters: [{ name: "repair", in: "query", required: false, schema: { type: "boolean" } }],
          responses: { "200": { description: "Reconciliation report" }, ...STD_ERRORS },
        },
      },
      "/v2/quotas/{project}": {
        parameters: [{ name: "project", in: "path", required: true, schema: projectSchema }],
        get: {
          summary: "A project's usage and limits",
          responses: { "200": json("Usage", "Usage"), ...STD_ERRORS },
        },
        put: {
          summary: "Override a project's limits (-1 unlimited, null back to the default); admins only",
          requestBody: { required: true, content: { "application/json": { schema: ref("LimitsUpdate") } } },
          responses: {
            "200": json("Usage", "Usage with the new limits"),
            "400": err("A project id over 255 characters, or an invalid limit"),
            ...STD_ERRORS,
            "413": err(BODY_TOO_LARGE),
            "415": NOT_JSON,
          },
        },
      },
    },
  };
}
