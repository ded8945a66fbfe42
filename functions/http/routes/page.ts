import type { Context, Env, Hono } from "hono";
import { errorResponse } from "../errors.ts";

/** One file of the browser page. */
export interface PageFile {
  body: Uint8Array;
  contentType: string;
}

/** The browser page's files (`index.html`, `app.js`, `app.css`), wherever the function keeps them. */
export interface PageFiles {
  /** The file named `name`, or undefined when there is none. */
  read(name: string): Promise<PageFile | undefined>;
}

/** File names the page has: no paths, nothing hidden. */
const FILE_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/**
 * What the page may do: talk to this API and to storage (whose origin is the presigned links' — an S3
 * endpoint in AWS, MinIO on the local stack), compile hash-wasm's WebAssembly, and Uppy's inline styles.
 * Nothing may frame it, and it sends no Referer (the URL fragment holds a token).
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "connect-src 'self' https: http:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

async function serve(c: Context, files: PageFiles, name: string): Promise<Response> {
  const file = FILE_NAME.test(name) ? await files.read(name) : undefined;
  if (!file)
    return errorResponse(c, 404, `The resource could not be found: /ui/${name.slice(0, 64)}`, "NOT_FOUND");
  c.header("Content-Type", file.contentType);
  // Files change with every deploy and carry no content hash in their names: always revalidate.
  c.header("Cache-Control", "no-cache");
  c.header("X-Content-Type-Options", "nosniff");
  c.header("Referrer-Policy", "no-referrer");
  c.header("Content-Security-Policy", CONTENT_SECURITY_POLICY);
  return c.body(file.body as Uint8Array<ArrayBuffer>, 200);
}

/** `GET /ui/`: the browser upload page, loaded without a token (it asks for one, or takes `#token=`). */
export function registerPageRoutes<E extends Env>(app: Hono<E>, deps: { page: PageFiles }): void {
  app.get("/ui", (c) => c.redirect("/ui/", 301));
  app.get("/ui/", (c) => serve(c, deps.page, "index.html"));
  app.get("/ui/:name", (c) => serve(c, deps.page, c.req.param("name")));
}
