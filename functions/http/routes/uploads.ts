import type { Context, Hono } from "hono";
import * as z from "zod";
import { InvalidRequestError } from "../../core/errors.ts";
import type { Caller } from "../../core/image/access.ts";
import { MAX_PARTS_PER_REQUEST, type MultipartUploadService } from "../../core/uploads/multipart.ts";
import { MAX_PARTS } from "../../core/uploads/plan.ts";
import { describeZod } from "../errors.ts";

type Env = { Variables: { caller: Caller } };

export interface UploadRouteDeps {
  uploads: MultipartUploadService;
}

const SignBody = z.strictObject({
  parts: z.array(z.number().int().min(1).max(MAX_PARTS)).min(1).max(MAX_PARTS_PER_REQUEST),
});

const CompleteBody = z.strictObject({
  upload_sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, "must be 64 hexadecimal digits")
    .optional(),
});

/** Parses a JSON body with `schema`; an empty body counts as `{}` where the body is optional. */
async function body<T>(c: Context<Env>, schema: z.ZodType<T>, optional: boolean): Promise<T> {
  const text = await c.req.text();
  let raw: unknown = {};
  if (text.trim() !== "" || !optional) {
    try {
      raw = JSON.parse(text);
    } catch {
      throw new InvalidRequestError("The request body is not valid JSON.");
    }
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new InvalidRequestError(`Invalid request: ${describeZod(parsed.error)}`);
  return parsed.data;
}

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

  app.post("/v2/images/:id/upload/parts", async (c) => {
    const { parts } = await body(c, SignBody, false);
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

  app.post("/v2/images/:id/upload/complete", async (c) => {
    const declared = await body(c, CompleteBody, true);
    await uploads.complete(c.req.param("id"), c.get("caller"), declared);
    // Accepted: the import starts when storage announces the assembled object.
    return c.body(null, 202);
  });

  app.post("/v2/images/:id/upload/cancel", async (c) => {
    await uploads.cancel(c.req.param("id"), c.get("caller"));
    return c.body(null, 204);
  });
}
