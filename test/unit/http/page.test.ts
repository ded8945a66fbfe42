import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FolderPageFiles } from "../../../functions/adapters/files/page-files.ts";
import { createApp } from "../../../functions/http/app.ts";
import type { PageFiles } from "../../../functions/http/routes/page.ts";

// The page's routes need no token and serve only the page's own files; nothing else of the app changes.
const files: Record<string, string> = {
  "index.html": "<!doctype html><title>Hangar</title>",
  "app.js": "console.log(1)",
};
const page: PageFiles = {
  async read(name) {
    const text = files[name];
    return text === undefined
      ? undefined
      : { body: new TextEncoder().encode(text), contentType: "text/x-test" };
  },
};
const refuseTokens = async () => {
  throw new Error("no token is checked for the page");
};
const app = createApp({
  images: {} as never,
  verifyToken: refuseTokens,
  log: { info() {}, warn() {}, error() {}, debug() {} } as never,
  maxUploadSize: 1,
  page,
});

describe("GET /ui/", () => {
  it("serves the page without a token, with a policy that keeps it unframed and its token out of Referer", async () => {
    const res = await app.request("/ui/");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(files["index.html"]);
    expect(res.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
    expect(res.headers.get("content-security-policy")).toContain("script-src 'self' 'wasm-unsafe-eval'");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect((await app.request("/ui/app.js")).status).toBe(200);
  });

  it("sends /ui to /ui/, so the page's relative links resolve", async () => {
    const res = await app.request("/ui");
    expect(res.status).toBe(301);
    expect(res.headers.get("location")).toBe("/ui/");
  });

  it("answers Glance's 404 for anything that is not one of the page's files", async () => {
    for (const path of [
      "/ui/missing.js",
      "/ui/..%2Findex.html",
      "/ui/.hidden",
      "/ui/a/b.js",
      "/ui/INDEX.HTML",
    ]) {
      const res = await app.request(path);
      expect(res.status, path).toBe(404);
      expect(((await res.json()) as { error: { reason: string } }).error.reason, path).toBe("NOT_FOUND");
    }
  });

  it("has no page when none is given, and /v2 still needs a token", async () => {
    const bare = createApp({
      images: {} as never,
      verifyToken: refuseTokens,
      log: { info() {}, warn() {}, error() {}, debug() {} } as never,
      maxUploadSize: 1,
    });
    expect((await bare.request("/ui/")).status).toBe(404);
    expect((await app.request("/v2/images")).status).toBe(401);
  });
});

describe("FolderPageFiles", () => {
  const dir = mkdtempSync(join(tmpdir(), "hangar-page-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "index.html"), "<p>hi</p>");
  writeFileSync(join(dir, "app.js"), "1");
  writeFileSync(join(dir, "secret.json"), "{}");

  it("reads the page's files with their types, and nothing of another type", async () => {
    const folder = new FolderPageFiles(dir);
    const html = await folder.read("index.html");
    expect(html?.contentType).toBe("text/html; charset=utf-8");
    expect(new TextDecoder().decode(html?.body)).toBe("<p>hi</p>");
    expect((await folder.read("app.js"))?.contentType).toBe("text/javascript; charset=utf-8");
    expect(await folder.read("secret.json")).toBeUndefined();
    expect(await folder.read("absent.css")).toBeUndefined();
  });
});
