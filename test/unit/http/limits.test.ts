import { beforeAll, describe, expect, it } from "vitest";
import { readOnlyFields } from "../../../functions/core/image/catalogue.ts";
import { imageSchema } from "../../../functions/http/image-json.ts";
import { MAX_BODY_BYTES } from "../../../functions/http/limits.ts";
import { PATCH_TYPE, testApp } from "./harness.ts";

/**
 * Hostile and careless input at the HTTP edge (in-memory fakes): one rule set for create and PATCH, every
 * limit that DynamoDB or the process would hit checked first with a 4xx naming it.
 */

let h: Awaited<ReturnType<typeof testApp>>;
let alice: string;
let admin: string;

beforeAll(async () => {
  h = await testApp();
  alice = await h.token("alice", "p-alice", ["member"]);
  admin = await h.token("root", "p-admin", ["admin"]);
});

type GlanceError = { code: number; title: string; message: string; reason: string };
async function glanceError(res: Response, status: number): Promise<GlanceError> {
  const text = await res.text();
  expect(res.status, text.slice(0, 300)).toBe(status);
  const body = JSON.parse(text) as { error: GlanceError };
  expect(body.error.code).toBe(status);
  expect(body.error.message.length).toBeGreaterThan(5);
  // A hostile value is never echoed whole.
  expect(body.error.message.length).toBeLessThan(600);
  return body.error;
}
const post = (body: unknown, tok = alice) => h.call("POST", "/v2/images", tok, body);
const postRaw = (text: string, tok = alice) =>
  h.app.request("/v2/images", {
    method: "POST",
    headers: { "X-Auth-Token": tok, "Content-Type": "application/json" },
    body: text,
  });
const patch = (id: string, ops: unknown, tok = alice) =>
  h.call("PATCH", `/v2/images/${id}`, tok, ops, PATCH_TYPE);
async function newImage(body: Record<string, unknown> = { name: "x" }): Promise<string> {
  const res = await post(body);
  expect(res.status, await res.clone().text()).toBe(201);
  return ((await res.json()) as { id: string }).id;
}
const props = (n: number, value: (i: number) => string) =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, value(i)]));

describe("one rule set for create and PATCH", () => {
  const cases: [string, unknown][] = [
    ["deleted", true],
    ["deleted", "x"],
    ["deleted_at", "2026-01-01T00:00:00Z"],
    ["location", "http://x/"],
    ["locations", []],
    ["properties", { a: "b" }],
    ["properties", "x"],
    ["os_glance_import_task", "x"],
    ["os_glance_failed_import", ""],
    ["status", "active"],
    ["checksum", "x"],
    ["size", 1],
    ["staged_size", 1],
    ["multipart_upload_id", "u"],
    ["import_lease_until", "x"],
    ["self", "x"],
    ["visibility", "public"],
    ["visibility", "bogus"],
    ["min_ram", -1],
    ["disk_format", "bogus"],
    ["tags", Array.from({ length: 129 }, (_, i) => `t${i}`)],
    ["name", "n".repeat(256)],
    ["x".repeat(256), "v"],
    ["long_value", "v".repeat(65536)],
    ["number_value", 4],
    ["null_value", null],
    ["", "empty name"],
    ["constructor", "x"],
    ["__proto__", "x"],
  ];
  for (const [name, value] of cases) {
    it(`'${name.slice(0, 30)}' = ${JSON.stringify(value)?.slice(0, 30)}: the same answer on create and on PATCH`, async () => {
      const id = await newImage();
      const viaPatch = await patch(id, [{ op: "add", path: `/${name}`, value }]);
      const viaCreate = await post({ name: "c", [name]: value });
      const p = await viaPatch.text();
      const c = await viaCreate.text();
      expect(viaCreate.status, `create: ${c.slice(0, 200)}; patch: ${p.slice(0, 200)}`).toBe(viaPatch.status);
      expect(viaCreate.status).toBeGreaterThanOrEqual(400);
      expect(viaCreate.status).toBeLessThan(500);
      // The pointer `/` is refused as a pointer before its empty name is judged; both are 400.
      if (name !== "") expect(JSON.parse(c).error.reason).toBe(JSON.parse(p).error.reason);
    });
  }

  it("reserved names are 403 RESERVED, read-only ones 403 READ_ONLY, on create as on PATCH", async () => {
    for (const name of ["deleted", "deleted_at", "location", "properties", "os_glance_x"]) {
      expect((await glanceError(await post({ [name]: "x" }), 403)).reason, name).toBe("RESERVED");
    }
    for (const name of ["locations", "status", "staged_size", "multipart_upload_id"]) {
      const e = await glanceError(await post({ [name]: "x" }), 403);
      expect(e).toMatchObject({ reason: "READ_ONLY", message: `Attribute '${name}' is read-only.` });
    }
  });

  it("every read-only attribute of the image schema is refused", () => {
    for (const [name, p] of Object.entries(imageSchema().properties)) {
      if ("readOnly" in p && p.readOnly) expect(readOnlyFields().has(name), name).toBe(true);
    }
  });

  it("128 extra properties are accepted on create; 129, or 20,000 empty ones, are 413 naming the limit", async () => {
    expect((await post({ name: "full", ...props(128, () => "v") })).status).toBe(201);
    const over = await glanceError(await post(props(129, () => "v")), 413);
    expect(over.message).toMatch(/128 extra properties/);
    const many = await glanceError(await post(props(20_000, () => "")), 413);
    expect(many.message).toMatch(/128 extra properties/);
    // 100,000 of them are a body over the body limit: refused before they are parsed.
    const body = await glanceError(await post(props(100_000, () => "")), 413);
    expect(body.reason).toBe("BODY_TOO_LARGE");
  });

  it("property names '', 'constructor' and '__proto__' are 400, and nothing is polluted", async () => {
    for (const raw of [
      '{"": "x"}',
      '{"constructor": "x"}',
      '{"__proto__": "x"}',
      '{"__proto__": {"polluted": "yes"}}',
    ]) {
      const e = await glanceError(await postRaw(raw), 400);
      expect(e.message).toMatch(/property name/i);
    }
    const id = await newImage();
    for (const path of ["/constructor", "/__proto__"]) {
      await glanceError(await patch(id, [{ op: "add", path, value: "x" }]), 400);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty("polluted");
  });
});

describe("record size (DynamoDB items are at most 400 KB)", () => {
  it("create: 5 values of 65,535 characters fit; 7 do not (413 naming the limit)", async () => {
    expect((await post({ name: "big", ...props(5, () => "v".repeat(65_535)) })).status).toBe(201);
    const e = await glanceError(await post({ name: "too big", ...props(7, () => "v".repeat(65_535)) }), 413);
    expect(e.message).toMatch(/400 KB/);
    expect(e.reason).toBe("LIMIT_EXCEEDED");
  });

  it("counts bytes, not characters: 3 values of 65,535 three-byte characters are too big", async () => {
    await glanceError(await post(props(3, () => "€".repeat(65_535))), 413);
  });

  it("PATCH: adding a sixth large value to a record near the limit is 413, and nothing is written", async () => {
    const id = await newImage({ name: "near", ...props(5, () => "v".repeat(65_535)) });
    const e = await glanceError(
      await patch(id, [{ op: "add", path: "/p5", value: "w".repeat(65_535) }]),
      413,
    );
    expect(e.message).toMatch(/400 KB/);
    expect((await h.images.get(id))?.properties.p5).toBeUndefined();
  });
});

describe("ids, markers and project names longer than storage keys take", () => {
  const long = "a".repeat(3000);
  it("an image id that is not a UUID is 404 on every image route, without echoing it whole", async () => {
    const routes: [string, string, unknown?][] = [
      ["GET", `/v2/images/${long}`],
      ["DELETE", `/v2/images/${long}`],
      ["GET", `/v2/images/${long}/file`],
      ["PUT", `/v2/images/${long}/tags/t`],
      ["DELETE", `/v2/images/${long}/tags/t`],
      ["GET", `/v2/images/${long}/members`],
      ["POST", `/v2/images/${long}/members`, { member: "p" }],
      ["GET", `/v2/images/${long}/members/p`],
      ["POST", `/v2/images/${long}/actions/deactivate`],
      ["POST", `/v2/images/${long}/actions/reactivate`],
      [
        "POST",
        `/v2/images/${long}/import`,
        { method: { name: "web-download", uri: "http://images.example/" } },
      ],
      ["GET", `/v2/images/${long}/upload/parts`],
      ["POST", `/v2/images/${long}/upload/cancel`],
      ["GET", "/v2/images/not-a-uuid"],
      ["GET", `/v2/images/${encodeURIComponent("é".repeat(1500))}`],
    ];
    for (const [method, path, body] of routes) {
      const e = await glanceError(await h.call(method, path, alice, body), 404);
      expect(e.reason, `${method} ${path.slice(0, 40)}`).toBe("NOT_FOUND");
    }
    await glanceError(await patch(long, [{ op: "replace", path: "/name", value: "x" }]), 404);
  });

  it("a member id longer than a project id is 404", async () => {
    const id = await newImage({ name: "s", visibility: "shared" });
    await glanceError(await h.call("GET", `/v2/images/${id}/members/${long}`, alice), 404);
    await glanceError(await h.call("DELETE", `/v2/images/${id}/members/${long}`, alice), 404);
    await glanceError(
      await h.call("PUT", `/v2/images/${id}/members/${long}`, alice, { status: "accepted" }),
      404,
    );
  });

  it("a marker that is not an image id is 400", async () => {
    for (const marker of [long, "nope", "%00"]) {
      const e = await glanceError(await h.call("GET", `/v2/images?marker=${marker}`, alice), 400);
      expect(e.message).toMatch(/marker/);
    }
  });

  it("a project name over 255 characters is 400 on the quota and usage routes", async () => {
    for (const [method, path, body] of [
      ["GET", `/v2/quotas/${long}`],
      ["PUT", `/v2/quotas/${long}`, { image_count_total: 1 }],
      ["GET", `/v2/info/usage?project_id=${long}`],
    ] as const) {
      const e = await glanceError(await h.call(method, path, admin, body), 400);
      expect(e.message).toMatch(/255/);
    }
  });

  it("a token naming a project id over 255 characters is 401", async () => {
    const tok = await h.token("x", long, ["member"]);
    await glanceError(await h.call("GET", "/v2/images", tok), 401);
  });
});

describe("request bodies are limited to 512 KiB, under what API Gateway and Lambda take", () => {
  const padded = (total: number) => {
    const head = '{"name":"padded"}';
    return head + " ".repeat(total - head.length);
  };
  it("a body of exactly the limit is read; one byte more is 413 with Glance's body", async () => {
    // Six bytes a body byte at worst once escaped into the event JSON: still under Lambda's 6 MB.
    expect(MAX_BODY_BYTES * 6).toBeLessThan(6 * 1024 * 1024 - 64 * 1024);
    expect((await postRaw(padded(MAX_BODY_BYTES))).status).toBe(201);
    const e = await glanceError(await postRaw(padded(MAX_BODY_BYTES + 1)), 413);
    expect(e.message).toMatch(/524288 bytes/);
    expect(e.title).toBe("Request Entity Too Large");
  });

  it("a declared Content-Length over the limit is refused before the body is read", async () => {
    const res = await h.app.request("/v2/images", {
      method: "POST",
      headers: {
        "X-Auth-Token": alice,
        "Content-Type": "application/json",
        "Content-Length": String(MAX_BODY_BYTES + 1),
      },
      body: '{"name":"liar"}',
    });
    await glanceError(res, 413);
  });

  it("applies to every route with a body (PATCH, members, import, quotas)", async () => {
    const id = await newImage();
    const big = `[${" ".repeat(MAX_BODY_BYTES)}]`;
    const res = await h.app.request(`/v2/images/${id}`, {
      method: "PATCH",
      headers: { "X-Auth-Token": alice, "Content-Type": PATCH_TYPE },
      body: big,
    });
    await glanceError(res, 413);
    for (const path of [`/v2/images/${id}/members`, `/v2/images/${id}/import`]) {
      const r = await h.app.request(path, {
        method: "POST",
        headers: { "X-Auth-Token": alice, "Content-Type": "application/json" },
        body: big,
      });
      await glanceError(r, 413);
    }
  });
});
