import { randomUUID } from "node:crypto";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { createImageService } from "../../../functions/core/images.ts";
import { createApp } from "../../../functions/http/app.ts";
import { createTokenVerifier } from "../../../functions/http/auth.ts";
import { imageSchema } from "../../../functions/http/image-json.ts";
import { fixedClock, MemoryImages, MemoryObjects, silentLog } from "../fakes.ts";

let app: ReturnType<typeof createApp>;
let token: (
  claims: Record<string, unknown>,
  opts?: { issuer?: string; expiresIn?: string },
) => Promise<string>;
let alice: string;
let bob: string;

beforeAll(async () => {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  token = (claims, opts = {}) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256" })
      .setIssuer(opts.issuer ?? "test")
      .setAudience("hangar")
      .setExpirationTime(opts.expiresIn ?? "1h")
      .sign(privateKey);
  const images = new MemoryImages();
  const service = createImageService({
    images,
    objects: new MemoryObjects(),
    clock: fixedClock(),
    log: silentLog,
    newId: randomUUID,
    uploadUrlTtlSeconds: 600,
    downloadUrlTtlSeconds: 60,
  });
  app = createApp({
    images: service,
    verifyToken: createTokenVerifier({
      issuer: "test",
      audience: "hangar",
      publicJwk: JSON.stringify(await exportJWK(publicKey)),
    }),
    log: silentLog,
    maxUploadSize: 5 * 1024 ** 3,
  });
  alice = await token({ sub: "alice", project_id: "p-alice", roles: ["member"] });
  bob = await token({ sub: "bob", project_id: "p-bob", roles: ["member"] });
});

const post = (body: unknown, tok: string, headers: Record<string, string> = {}) =>
  app.request("/v2/images", {
    method: "POST",
    headers: { "X-Auth-Token": tok, "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });

async function expectGlanceError(res: Response, status: number, reason: string) {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  const body = (await res.json()) as {
    error: { code: number; message: string; reason: string; title: string };
  };
  expect(body.error.code).toBe(status);
  expect(body.error.reason).toBe(reason);
  expect(body.error.message.length).toBeGreaterThan(5);
  return body.error;
}

describe("HTTP API", () => {
  it("GET /versions lists v2 without a token", async () => {
    const res = await app.request("/versions");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { versions: { id: string; status: string }[] };
    expect(body.versions[0]).toMatchObject({ id: expect.stringMatching(/^v2\.\d+$/), status: "CURRENT" });
  });

  it("refuses a missing, malformed, foreign-issuer or expired token with 401 and a Glance error body", async () => {
    await expectGlanceError(await app.request("/v2/images"), 401, "UNAUTHENTICATED");
    await expectGlanceError(
      await app.request("/v2/images", { headers: { "X-Auth-Token": "nope" } }),
      401,
      "TOKEN_INVALID",
    );
    const foreign = await token({ sub: "x", project_id: "p" }, { issuer: "other" });
    await expectGlanceError(
      await app.request("/v2/images", { headers: { "X-Auth-Token": foreign } }),
      401,
      "TOKEN_INVALID",
    );
    const expired = await token({ sub: "x", project_id: "p" }, { expiresIn: "-1m" });
    await expectGlanceError(
      await app.request("/v2/images", { headers: { "X-Auth-Token": expired } }),
      401,
      "TOKEN_EXPIRED",
    );
  });

  it("accepts the token as X-Auth-Token and as Authorization: Bearer", async () => {
    expect((await app.request("/v2/images", { headers: { "X-Auth-Token": alice } })).status).toBe(200);
    expect((await app.request("/v2/images", { headers: { Authorization: `Bearer ${alice}` } })).status).toBe(
      200,
    );
  });

  it("create answers 201 with the image, the upload link and the request id", async () => {
    const res = await post(
      {
        name: "cirros",
        disk_format: "qcow2",
        container_format: "bare",
        upload_size: 10,
        os_distro: "cirros",
      },
      alice,
    );
    expect(res.status).toBe(201);
    expect(res.headers.get("x-openstack-request-id")).toMatch(/^req-[0-9a-f-]{36}$/);
    const image = (await res.json()) as Record<string, unknown> & {
      upload: { method: string; url: string; headers: Record<string, string>; expires_at: string };
    };
    expect(image).toMatchObject({
      name: "cirros",
      status: "queued",
      owner: "p-alice",
      os_distro: "cirros",
      self: `/v2/images/${image.id}`,
    });
    expect(image.upload.method).toBe("PUT");
    expect(image.upload.headers["Content-Length"]).toBe("10");
    expect(Date.parse(image.upload.expires_at)).toBeGreaterThan(Date.now());
    for (const key of Object.keys(image)) {
      if (!(key in imageSchema().properties)) expect(typeof image[key], key).toBe("string");
    }
  });

  it("refuses read-only attributes (403), bad formats and non-string extra properties (400), bad JSON (400)", async () => {
    const ro = await expectGlanceError(await post({ name: "a", checksum: "x" }, alice), 403, "READ_ONLY");
    expect(ro.message).toBe("Attribute 'checksum' is read-only.");
    const bad = await expectGlanceError(await post({ disk_format: "bogus" }, alice), 400, "INVALID_REQUEST");
    expect(bad.message).toContain("disk_format");
    await expectGlanceError(await post({ foo: 4 }, alice), 400, "INVALID_REQUEST");
    await expectGlanceError(await post("{nope", alice), 400, "INVALID_REQUEST");
    await expectGlanceError(await post({ upload_sha256: "abc" }, alice), 400, "INVALID_REQUEST");
  });

  it("bodies go through the router's validator: not JSON is 400, not an object 400, another media type 415", async () => {
    const notJson = await expectGlanceError(await post("{nope", alice), 400, "INVALID_REQUEST");
    expect(notJson.message).toBe("The request body is not valid JSON.");
    const array = await expectGlanceError(await post([{ name: "a" }], alice), 400, "INVALID_REQUEST");
    expect(array.message).toBe("Invalid image: The request body must be a JSON object.");
    const form = await post({ name: "a" }, alice, { "Content-Type": "application/x-www-form-urlencoded" });
    const refused = await expectGlanceError(form, 415, "UNSUPPORTED_MEDIA_TYPE");
    expect(refused.message).toContain("application/json");
    // A JSON media type with a suffix or parameters is JSON.
    expect(
      (await post({ name: "a" }, alice, { "Content-Type": "application/json; charset=utf-8" })).status,
    ).toBe(201);
    const created = (await (await post({ name: "m" }, alice)).json()) as { id: string };
    const members = (body: string, type = "application/json") =>
      app.request(`/v2/images/${created.id}/members`, {
        method: "POST",
        headers: { "X-Auth-Token": alice, "Content-Type": type },
        body,
      });
    const bad = await expectGlanceError(await members("{}"), 400, "INVALID_REQUEST");
    expect(bad.message).toMatch(/^Invalid member: member: /);
    await expectGlanceError(
      await members('{"member": "p-bob"}', "text/plain"),
      415,
      "UNSUPPORTED_MEDIA_TYPE",
    );
  });

  it("another project gets 404 for a private image; unknown paths get a Glance 404", async () => {
    const created = (await (await post({ name: "p", visibility: "private" }, alice)).json()) as {
      id: string;
    };
    const res = await app.request(`/v2/images/${created.id}`, { headers: { "X-Auth-Token": bob } });
    const err = await expectGlanceError(res, 404, "NOT_FOUND");
    expect(err.message).toBe(`No image found with ID ${created.id}`);
    await expectGlanceError(await app.request("/nothing/here"), 404, "NOT_FOUND");
  });

  it("PUT /file tells the client to use the upload link", async () => {
    const created = (await (await post({ name: "p" }, alice)).json()) as { id: string };
    const res = await app.request(`/v2/images/${created.id}/file`, {
      method: "PUT",
      headers: { "X-Auth-Token": alice },
      body: "abc",
    });
    const err = await expectGlanceError(res, 405, "USE_UPLOAD_LINK");
    expect(err.message).toContain("upload link");
  });

  it("lists with marker pagination and relative next links", async () => {
    const carol = await token({ sub: "carol", project_id: "p-carol", roles: ["member"] });
    for (const n of ["a", "b", "c"]) await post({ name: n }, carol);
    const seen: string[] = [];
    let next: string | undefined = "/v2/images?limit=2&sort_key=name&sort_dir=asc";
    while (next) {
      expect(next.startsWith("/v2/images")).toBe(true);
      const body = (await (await app.request(next, { headers: { "X-Auth-Token": carol } })).json()) as {
        images: { name: string }[];
        next?: string;
      };
      seen.push(...body.images.map((i) => i.name));
      next = body.next;
    }
    expect(seen).toEqual(["a", "b", "c"]);
  });
});

describe("image schema", () => {
  it("never declares a property that clashes with glanceclient's options", () => {
    const forbidden = [
      "stores",
      "store",
      "hidden",
      "property",
      "progress",
      "import_method",
      "uri",
      "remote_region",
      "remote_image_id",
      "remote_service_interface",
      "all_stores",
      "allow_failure",
      "remove_property",
    ];
    for (const name of forbidden) expect(Object.keys(imageSchema().properties)).not.toContain(name);
  });
  it("gives every array property its item type", () => {
    for (const [name, p] of Object.entries(imageSchema().properties)) {
      if (p.type === "array")
        expect((p as { items?: { type?: string } }).items?.type, name).toBeTypeOf("string");
    }
  });
});
