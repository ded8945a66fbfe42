import type { Hono } from "hono";
import { InvalidRequestError, UnsupportedMediaTypeError } from "../../core/errors.ts";
import type { Caller } from "../../core/image/access.ts";
import type { ImageMember } from "../../core/image/members.ts";
import { PATCH_MEDIA_TYPES } from "../../core/image/patch.ts";
import type { ImageService } from "../../core/images.ts";
import type { ImportPolicy } from "../../core/policy.ts";
import {
  ImagePatch,
  ImportRequest,
  MemberCreate,
  MemberUpdate,
  memberSchema,
  membersSchema,
} from "../api-schemas.ts";
import { describeZod } from "../errors.ts";
import { glanceTime, imageJson } from "../image-json.ts";
import { jsonBody, mediaTypeOf, parseJson } from "../validate.ts";

type Env = { Variables: { caller: Caller } };

/** What `/v2/info/import` shows of the operator's policy (from configuration, passed by the wiring). */
export interface ImportPolicyInfo
  extends Pick<ImportPolicy, "preferredFormat" | "acceptedFormats" | "maxVirtualSize" | "maxGzipRatio"> {
  maxUploadSize: number;
  webDownload: { enabled: boolean; maxBytes: number; timeoutSeconds: number };
}

export interface GlanceRouteDeps {
  images: ImageService;
  policy: ImportPolicyInfo;
}

/** A member as Glance shows it; validated by glanceclient against `/v2/schemas/member`. */
export function memberJson(m: ImageMember) {
  return {
    created_at: glanceTime(m.created_at),
    image_id: m.image_id,
    member_id: m.member_id,
    schema: "/v2/schemas/member",
    status: m.status,
    updated_at: glanceTime(m.updated_at),
  };
}

/** The import methods Hangar offers (Glance's names); the upload link is Hangar's own path, not listed. */
export function importMethods(policy: ImportPolicyInfo): string[] {
  return policy.webDownload.enabled ? ["web-download"] : [];
}

/** `/v2/info/import` in Glance's shape, plus Hangar's policy block. */
export function importInfoJson(policy: ImportPolicyInfo) {
  return {
    "import-methods": {
      description: "Import methods available.",
      type: "array" as const,
      value: importMethods(policy),
    },
    hangar: {
      preferred_format: policy.preferredFormat,
      accepted_formats: [...policy.acceptedFormats],
      max_virtual_size: policy.maxVirtualSize,
      max_gzip_ratio: policy.maxGzipRatio,
      max_upload_size: policy.maxUploadSize,
      web_download: {
        max_bytes: policy.webDownload.maxBytes,
        timeout_seconds: policy.webDownload.timeoutSeconds,
      },
    },
  };
}

/**
 * Glance v2 routes beyond create/show/list/delete: JSON-patch update, tags, members, deactivate/reactivate,
 * the `web-download` import, discovery (`/v2/info/*`, member schemas). Registered after authentication.
 */
export function registerGlanceRoutes(app: Hono<Env>, deps: GlanceRouteDeps): void {
  const { images, policy } = deps;

  app.get("/v2/schemas/member", (c) => c.json(memberSchema()));
  app.get("/v2/schemas/members", (c) => c.json(membersSchema()));

  app.patch("/v2/images/:id", async (c) => {
    // Glance's own media type, which the router's JSON validator does not read: checked and parsed here.
    const type = mediaTypeOf(c);
    if (!(PATCH_MEDIA_TYPES as readonly string[]).includes(type)) {
      throw new UnsupportedMediaTypeError(
        `Unsupported Content-Type '${type || "(none)"}': send ${PATCH_MEDIA_TYPES[0]}.`,
      );
    }
    const ops = ImagePatch().safeParse(parseJson(await c.req.text()));
    if (!ops.success) throw new InvalidRequestError(`Invalid JSON patch: ${describeZod(ops.error)}`);
    const view = await images.update(c.req.param("id"), ops.data, c.get("caller"));
    return c.json(imageJson(view.image, view.upload));
  });

  app.put("/v2/images/:id/tags/:tag", async (c) => {
    await images.addTag(c.req.param("id"), c.req.param("tag"), c.get("caller"));
    return c.body(null, 204);
  });
  app.delete("/v2/images/:id/tags/:tag", async (c) => {
    await images.removeTag(c.req.param("id"), c.req.param("tag"), c.get("caller"));
    return c.body(null, 204);
  });

  app.post("/v2/images/:id/members", ...jsonBody(MemberCreate, "member"), async (c) => {
    const { member } = c.req.valid("json");
    // Glance answers 200 (not 201) here, and glanceclient expects the member in the body.
    return c.json(memberJson(await images.addMember(c.req.param("id"), member, c.get("caller"))));
  });
  app.get("/v2/images/:id/members", async (c) => {
    const members = await images.listMembers(c.req.param("id"), c.get("caller"));
    return c.json({ members: members.map(memberJson), schema: "/v2/schemas/members" });
  });
  app.get("/v2/images/:id/members/:member", async (c) => {
    const m = await images.getMember(c.req.param("id"), c.req.param("member"), c.get("caller"));
    return c.json(memberJson(m));
  });
  app.put("/v2/images/:id/members/:member", ...jsonBody(MemberUpdate, "member status"), async (c) => {
    const { status } = c.req.valid("json");
    const m = await images.setMemberStatus(c.req.param("id"), c.req.param("member"), status, c.get("caller"));
    return c.json(memberJson(m));
  });
  app.delete("/v2/images/:id/members/:member", async (c) => {
    await images.removeMember(c.req.param("id"), c.req.param("member"), c.get("caller"));
    return c.body(null, 204);
  });

  app.post("/v2/images/:id/actions/deactivate", async (c) => {
    await images.deactivate(c.req.param("id"), c.get("caller"));
    return c.body(null, 204);
  });
  app.post("/v2/images/:id/actions/reactivate", async (c) => {
    await images.reactivate(c.req.param("id"), c.get("caller"));
    return c.body(null, 204);
  });

  app.post("/v2/images/:id/import", ...jsonBody(ImportRequest, "import request"), async (c) => {
    const { method } = c.req.valid("json");
    if (!importMethods(policy).includes(method.name)) {
      throw new InvalidRequestError(
        `Import method ${method.name} is not supported; available: ${importMethods(policy).join(", ") || "none"}. Upload bytes with the image's upload link instead.`,
        "UNSUPPORTED_METHOD",
      );
    }
    if (!method.uri) throw new InvalidRequestError("web-download needs method.uri, the URL to fetch.");
    await images.importFromWeb(c.req.param("id"), method.uri, c.get("caller"));
    return c.body(null, 202);
  });

  app.get("/v2/info/import", (c) => c.json(importInfoJson(policy)));

  app.get("/v2/info/stores", (c) =>
    c.json({ stores: [{ id: "hangar", description: "Hangar object storage (S3)", default: true }] }),
  );
}
