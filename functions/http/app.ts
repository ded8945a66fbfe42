import { randomUUID } from "node:crypto";
import { Hono } from "hono";
import { ForbiddenError, InvalidRequestError } from "../core/errors.ts";
import { type Caller, isAdmin } from "../core/image/access.ts";
import type { ImageService, NewImage } from "../core/images.ts";
import { parseListQuery } from "../core/list-query.ts";
import type { Logger } from "../core/ports.ts";
import type { QuotaService } from "../core/quotas.ts";
import type { MultipartUploadService } from "../core/uploads/multipart.ts";
import { createImageBody } from "./api-schemas.ts";
import { type TokenVerifier, tokenFrom } from "./auth.ts";
import { describeZod, errorResponse, toErrorResponse } from "./errors.ts";
import { CORE_FIELDS, IMAGE_SCHEMA, IMAGES_SCHEMA, imageJson, READ_ONLY_FIELDS } from "./image-json.ts";
import { openApiDocument } from "./openapi.ts";
import { type ImportPolicyInfo, registerGlanceRoutes } from "./routes/glance.ts";
import { registerQuotaRoutes } from "./routes/quotas.ts";
import { registerUploadRoutes } from "./routes/uploads.ts";

export interface AppDeps {
  images: ImageService;
  verifyToken: TokenVerifier;
  log: Logger;
  /** Largest `upload_size` a client may declare, in bytes. */
  maxUploadSize: number;
  /** Multipart upload routes (parts, complete, cancel); absent, large uploads have no plan to follow. */
  uploads?: MultipartUploadService;
  /** Usage and limits (`/v2/info/usage`, `/v2/quotas`). */
  quotas?: QuotaService;
  /** Operator policy shown by `/v2/info/import`; absent, defaults with web-download off. */
  policy?: ImportPolicyInfo;
}

type Env = { Variables: { caller: Caller } };

/** Versions document; glanceclient needs `{versions: [{id: "v2.x"}]}`. */
function versions(base: string) {
  const link = [{ rel: "self", href: `${base}/v2/` }];
  return {
    versions: ["v2.16", "v2.15", "v2.9", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0"].map(
      (id, i) => ({ id, status: i === 0 ? "CURRENT" : "SUPPORTED", links: link }),
    ),
  };
}

/** The Glance v2 HTTP API as one Hono app; the same app runs in Lambda and on the local stack. */
export function createApp(deps: AppDeps): Hono<Env> {
  const app = new Hono<Env>();
  const createBody = createImageBody(deps.maxUploadSize);
  const policy: ImportPolicyInfo = deps.policy ?? {
    preferredFormat: "raw",
    acceptedFormats: ["raw", "iso"],
    maxVirtualSize: 2 ** 40,
    maxGzipRatio: 64,
    maxUploadSize: deps.maxUploadSize,
    webDownload: { enabled: false, maxBytes: 0, timeoutSeconds: 0 },
  };

  app.use(async (c, next) => {
    await next();
    c.header("x-openstack-request-id", `req-${randomUUID()}`);
  });

  app.onError((err, c) => toErrorResponse(c, err, (m, f) => deps.log.error(m, f)));
  app.notFound((c) => errorResponse(c, 404, `The resource could not be found: ${c.req.path}`, "NOT_FOUND"));

  const base = (url: string) => new URL(url).origin;
  app.get("/", (c) => c.json(versions(base(c.req.url)), 300));
  app.get("/versions", (c) => c.json(versions(base(c.req.url))));
  // The API description needs no token, like the versions document.
  app.get("/openapi.json", (c) => c.json(openApiDocument()));

  app.use("/v2/*", async (c, next) => {
    const token = tokenFrom(c.req.raw.headers);
    if (!token) {
      return errorResponse(c, 401, "The request you have made requires authentication.", "UNAUTHENTICATED");
    }
    c.set("caller", await deps.verifyToken(token));
    await next();
  });

  app.get("/v2/schemas/image", (c) => c.json(IMAGE_SCHEMA));
  app.get("/v2/schemas/images", (c) => c.json(IMAGES_SCHEMA));

  app.post("/v2/images", async (c) => {
    const caller = c.get("caller");
    let raw: unknown;
    try {
      raw = await c.req.json();
    } catch {
      throw new InvalidRequestError("The request body is not valid JSON.");
    }
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new InvalidRequestError("The request body must be a JSON object.");
    }
    for (const key of Object.keys(raw)) {
      if (READ_ONLY_FIELDS.has(key))
        throw new ForbiddenError(`Attribute '${key}' is read-only.`, "READ_ONLY");
    }
    const parsed = createBody.safeParse(raw);
    if (!parsed.success) throw new InvalidRequestError(`Invalid image: ${describeZod(parsed.error)}`);
    const body = parsed.data;
    if (body.owner != null && body.owner !== caller.projectId && !isAdmin(caller)) {
      throw new ForbiddenError("You are not permitted to create images owned by another project.");
    }
    const properties: Record<string, string> = {};
    for (const [k, v] of Object.entries(body)) {
      if (!CORE_FIELDS.has(k) && typeof v === "string") {
        if (k.length > 255) throw new InvalidRequestError(`Property name '${k.slice(0, 40)}…' is too long.`);
        properties[k] = v;
      }
    }
    const input: NewImage = {
      id: body.id,
      name: body.name,
      visibility: body.visibility,
      protected: body.protected,
      os_hidden: body.os_hidden,
      disk_format: body.disk_format,
      container_format: body.container_format,
      min_disk: body.min_disk,
      min_ram: body.min_ram,
      tags: body.tags,
      properties,
      upload_size: body.upload_size,
      upload_sha256: body.upload_sha256,
    };
    const owner = body.owner != null && isAdmin(caller) ? { ...caller, projectId: body.owner } : caller;
    const view = await deps.images.create(input, owner);
    c.header("Location", `/v2/images/${view.image.id}`);
    return c.json(imageJson(view.image, view.upload), 201);
  });

  app.get("/v2/images", async (c) => {
    const params = [...new URL(c.req.url).searchParams.entries()];
    const query = parseListQuery(params);
    const { images, more } = await deps.images.list(c.get("caller"), query);
    // Links are relative: glanceclient appends `next` to its endpoint (notes/glanceclient.md).
    const rest = new URLSearchParams(params.filter(([k]) => k !== "marker"));
    const first = `/v2/images${rest.size ? `?${rest}` : ""}`;
    const last = images.at(-1);
    let next: string | undefined;
    if (more && last) {
      rest.append("marker", last.id);
      next = `/v2/images?${rest}`;
    }
    return c.json({
      images: images.map((i) => imageJson(i)),
      schema: "/v2/schemas/images",
      first,
      ...(next ? { next } : {}),
    });
  });

  app.get("/v2/images/:id", async (c) => {
    const view = await deps.images.show(c.req.param("id"), c.get("caller"));
    return c.json(imageJson(view.image, view.upload));
  });

  app.delete("/v2/images/:id", async (c) => {
    await deps.images.delete(c.req.param("id"), c.get("caller"));
    return c.body(null, 204);
  });

  app.get("/v2/images/:id/file", async (c) => {
    const link = await deps.images.downloadLink(c.req.param("id"), c.get("caller"));
    return c.redirect(link.url, 302);
  });

  const useTheLink = async (c: import("hono").Context<Env>) => {
    const view = await deps.images.show(c.req.param("id") ?? "", c.get("caller"));
    const where = !view.upload
      ? `this image is ${view.image.status} and takes no upload`
      : view.upload.method === "multipart"
        ? `upload them in parts following the image's multipart plan: ${view.upload.partsUrl}`
        : `PUT them to the image's upload link: ${view.upload.url}`;
    c.header("Allow", "GET");
    return errorResponse(
      c,
      405,
      `Hangar does not accept image data through the API; ${where}`,
      "USE_UPLOAD_LINK",
    );
  };
  app.put("/v2/images/:id/file", useTheLink);
  app.put("/v2/images/:id/stage", useTheLink);
  if (deps.uploads) registerUploadRoutes(app, { uploads: deps.uploads });
  registerGlanceRoutes(app, { images: deps.images, policy });
  if (deps.quotas) registerQuotaRoutes(app, { quotas: deps.quotas });

  return app;
}
