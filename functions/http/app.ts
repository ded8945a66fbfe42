import { randomUUID } from "node:crypto";
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { withContext } from "../adapters/observability/context.ts";
import type { MetricRecorder } from "../adapters/observability/metrics.ts";
import type { Caller } from "../core/image/access.ts";
import { MAX_NAME } from "../core/image/fields.ts";
import { isImageId } from "../core/image/image.ts";
import type { ImageService } from "../core/images.ts";
import { parseListQuery } from "../core/list-query.ts";
import { DEFAULT_IMPORT_POLICY } from "../core/policy.ts";
import type { Logger } from "../core/ports.ts";
import type { QuotaService } from "../core/quota-service.ts";
import type { MultipartUploadService } from "../core/uploads/multipart.ts";
import { NewImageBody } from "./api-schemas.ts";
import { type TokenVerifier, tokenFrom } from "./auth.ts";
import { errorResponse, toErrorResponse } from "./errors.ts";
import { imageJson, imageSchema, imagesSchema } from "./image-json.ts";
import { clip, MAX_BODY_BYTES } from "./limits.ts";
import { observeError, observeRequest } from "./observe.ts";
import { type ImportPolicyInfo, registerGlanceRoutes } from "./routes/glance.ts";
import { type PageFiles, registerPageRoutes } from "./routes/page.ts";
import { registerQuotaRoutes } from "./routes/quotas.ts";
import { registerUploadRoutes } from "./routes/uploads.ts";
import { jsonBody } from "./validate.ts";

export interface AppDeps {
  images: ImageService;
  verifyToken: TokenVerifier;
  log: Logger;
  /** Request latency and status by route, quota refusals; absent, none are recorded. */
  metrics?: MetricRecorder;
  /** Largest `upload_size` a client may declare, in bytes. */
  maxUploadSize: number;
  /** Multipart upload routes (parts, complete, cancel); absent, large uploads have no plan to follow. */
  uploads?: MultipartUploadService;
  /** Usage and limits (`/v2/info/usage`, `/v2/quotas`). */
  quotas?: QuotaService;
  /** Operator policy shown by `/v2/info/import`; absent, defaults with web-download off. */
  policy?: ImportPolicyInfo;
  /** The browser page's files, served at `/ui/` without a token; absent, there is no page. */
  page?: PageFiles;
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
  const policy: ImportPolicyInfo = deps.policy ?? {
    ...DEFAULT_IMPORT_POLICY,
    maxUploadSize: deps.maxUploadSize,
    webDownload: { enabled: false, maxBytes: 0, timeoutSeconds: 0 },
  };

  // One request id per request, Glance's `req-<uuid>`: answered in x-openstack-request-id, on every log
  // line of the request (and of the image's import), in its lifecycle events; one line and one latency
  // metric per request.
  app.use(async (c, next) => {
    const requestId = `req-${randomUUID()}`;
    const started = performance.now();
    await withContext({ request_id: requestId }, next);
    c.header("x-openstack-request-id", requestId);
    observeRequest(c, requestId, performance.now() - started, deps);
  });

  app.onError((err, c) => {
    observeError(err, deps);
    return toErrorResponse(c, err, (m, f) => deps.log.error(m, f));
  });
  app.use(
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: (c) =>
        errorResponse(
          c,
          413,
          `The request body is larger than the limit of ${MAX_BODY_BYTES} bytes.`,
          "BODY_TOO_LARGE",
        ),
    }),
  );
  app.notFound((c) =>
    errorResponse(c, 404, `The resource could not be found: ${clip(c.req.path, 200)}`, "NOT_FOUND"),
  );

  // Behind API Gateway the handler sees every request as HTTPS; X-Forwarded-Proto says what the client used
  // (https in AWS, http on the local stack's gateway), so the version links point where the client can go.
  const base = (c: Context<Env>) => {
    const url = new URL(c.req.url);
    const proto = c.req.header("x-forwarded-proto")?.split(",")[0]?.trim();
    return proto === "http" || proto === "https" ? `${proto}://${url.host}` : url.origin;
  };
  app.get("/", (c) => c.json(versions(base(c)), 300));
  app.get("/versions", (c) => c.json(versions(base(c))));
  // The API description needs no token, like the versions document.
  // Its text (and the schemas it describes) load with the first request for it, in a chunk of its own.
  app.get("/openapi.json", async (c) => c.json((await import("./openapi.ts")).openApiDocument()));
  // Nor does the browser page: it asks for a token and sends it only to /v2.
  if (deps.page) registerPageRoutes(app, { page: deps.page });

  app.use("/v2/*", async (c, next) => {
    const token = tokenFrom(c.req.raw.headers);
    if (!token) {
      return errorResponse(c, 401, "The request you have made requires authentication.", "UNAUTHENTICATED");
    }
    c.set("caller", await deps.verifyToken(token));
    await next();
  });

  app.get("/v2/schemas/image", (c) => c.json(imageSchema()));
  app.get("/v2/schemas/images", (c) => c.json(imagesSchema()));

  // Image ids are UUIDs: anything else names no image, and is never sent to storage as a key.
  const imageIdGuard = async (c: import("hono").Context<Env>, next: () => Promise<void>) => {
    const id = c.req.param("id") ?? "";
    if (!isImageId(id)) {
      return errorResponse(c, 404, `No image found with ID ${clip(id)}`, "NOT_FOUND");
    }
    await next();
  };
  app.use("/v2/images/:id", imageIdGuard);
  app.use("/v2/images/:id/*", imageIdGuard);
  // Member ids are project ids (at most 255 characters, like every name): a longer one is no member.
  app.use("/v2/images/:id/members/:member", async (c, next) => {
    const member = c.req.param("member");
    if (member.length === 0 || member.length > MAX_NAME) {
      return errorResponse(
        c,
        404,
        `Member ${clip(member)} of image ${c.req.param("id")} not found.`,
        "MEMBER_NOT_FOUND",
      );
    }
    await next();
  });

  // The fields are checked by the core, by the same rules as a PATCH of them.
  app.post("/v2/images", ...jsonBody(NewImageBody, "image"), async (c) => {
    const view = await deps.images.create(c.req.valid("json"), c.get("caller"));
    c.header("Location", `/v2/images/${view.image.id}`);
    return c.json(imageJson(view.image, view.upload), 201);
  });

  app.get("/v2/images", async (c) => {
    const params = [...new URL(c.req.url).searchParams.entries()];
    const query = parseListQuery(params);
    const { images, more } = await deps.images.list(c.get("caller"), query);
    // Links are relative: glanceclient appends `next` to its endpoint.
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
  // openstackclient and glanceclient run from a script (stdin not a terminal) PUT stdin here right after
  // create, and openstackclient deletes the image when that fails. An empty body sends nothing, so it
  // is answered 204 and the image stays queued with its upload link; any byte gets the 405 above.
  app.put("/v2/images/:id/file", async (c) => {
    const view =
      (await c.req.arrayBuffer()).byteLength === 0
        ? await deps.images.show(c.req.param("id"), c.get("caller"))
        : undefined;
    return view?.upload ? c.body(null, 204) : useTheLink(c);
  });
  app.put("/v2/images/:id/stage", useTheLink);
  if (deps.uploads) registerUploadRoutes(app, { uploads: deps.uploads });
  registerGlanceRoutes(app, { images: deps.images, policy });
  if (deps.quotas) registerQuotaRoutes(app, { quotas: deps.quotas });

  return app;
}
