import type { Hono } from "hono";
import * as z from "zod/mini";
import type { Caller } from "../../core/image/access.ts";
import { once } from "../../core/once.ts";
import { MAX_PARTS_PER_REQUEST, type MultipartUploadService } from "../../core/uploads/multipart.ts";
import { MAX_PARTS } from "../../core/uploads/plan.ts";
import { jsonBody } from "../validate.ts";

type Env = { Variables: { caller: Caller } };

export interface UploadRouteDeps {
  uploads: MultipartUploadService;
}

const SignBody = once(() =>
  z.strictObject({
    parts: z
      .array(z.number().check(z.int(), z.minimum(1), z.maximum(MAX_PARTS)))
      .check(z.minLength(1), z.maxLength(MAX_PARTS_PER_REQUEST)),
  }),
);

const CompleteBody = once(() =>
  z.strictObject({
    upload_sha256: z.optional(
      z.string().check(z.regex(/^[0-9a-fA-F]{64}$/, "must be 64 hexadecimal digits")),
    ),
  }),
);

/**
 * The multipart plan's links: `GET|POST /v2/images/{id}/upload/parts`, `POST .../complete`, `POST .../cancel`.
 * Registered by the API app after its authentication middleware; errors go through the app's error table.
 */
export function registerUploadRoutes(app: Hono<Env>, deps: UploadRouteDeps): void {
  const { uploads } = deps;

  app.get("/v2/images/:id/upload/parts", async (c) => {
    const { layout, parts } = await uploads.listParts(c.req.param("id"), c.get("caller"));
    return c.json({
      part_size: layout.partSize,
      part_count: layout.partCount,
      parts: parts.map((p) => ({ part_number: p.partNumber, size: p.size, etag: p.etag })),
    });
  });

  app.post("/v2/images/:id/upload/parts", ...jsonBody(SignBody, "request"), async (c) => {
    const { parts } = c.req.valid("json");
    const signed = await uploads.signParts(c.req.param("id"), c.get("caller"), parts);
    return c.json({
      parts: signed.map((p) => ({
        part_number: p.partNumber,
        size: p.size,
        method: p.method,
        url: p.url,
        headers: p.headers,
        expires_at: p.expiresAt,
      })),
    });
  });

  app.post(
    "/v2/images/:id/upload/complete",
    ...jsonBody(CompleteBody, "request", { optional: true }),
    async (c) => {
      const declared = c.req.valid("json");
      await uploads.complete(c.req.param("id"), c.get("caller"), declared);
      // Accepted: the import starts when storage announces the assembled object.
      return c.body(null, 202);
    },
  );

  app.post("/v2/images/:id/upload/cancel", async (c) => {
    await uploads.cancel(c.req.param("id"), c.get("caller"));
    return c.body(null, 204);
  });
}
