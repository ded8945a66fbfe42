import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PATCH_TYPE, testApp } from "./harness.ts";

/**
 * API fuzz over the app with in-memory fakes: random bodies, JSON patches, query strings, path ids and
 * headers. Whatever arrives, the answer is below 500, carries no stack trace, and every 4xx is Glance's error
 * body with a message. `test/integration/api-fuzz.test.ts` runs a smaller share against the real stack.
 */

let h: Awaited<ReturnType<typeof testApp>>;
const tokens: Record<string, string> = {};
const ids: string[] = [];
const seen = { cases: 0, fivexx: 0 };

beforeAll(async () => {
  h = await testApp();
  tokens.admin = await h.token("root", "p-admin", ["admin"]);
  tokens.member = await h.token("alice", "p-alice", ["member"]);
  tokens.reader = await h.token("rita", "p-alice", ["reader"]);
  tokens.other = await h.token("bob", "p-bob", ["member"]);
  tokens.none = await h.token("nobody", "p-alice", []);
  for (const body of [
    { name: "queued", visibility: "shared" },
    { name: "big", upload_size: 16 * 1024 * 1024 },
    { name: "active", visibility: "community", tags: ["a"] },
  ]) {
    const res = await h.call("POST", "/v2/images", tokens.member ?? "", body);
    expect(res.status).toBe(201);
    ids.push(((await res.json()) as { id: string }).id);
  }
  const active = ids[2] as string;
  await h.images.transition(active, "startImport", {});
  await h.images.transition(active, "finishImport", {});
  await h.call("POST", `/v2/images/${ids[0]}/members`, tokens.member ?? "", { member: "p-bob" });
});

afterAll(() => {
  // The figures the reliability notes quote.
  console.info(`api fuzz (unit): ${seen.cases} requests, ${seen.fivexx} answered 5xx`);
});

const STACK = /\bat [\w$.<>]+ \(|\.(ts|js|mjs):\d+:\d+|node:internal|^\s+at\s/m;

/** Sends one request and checks the answer's contract; a Request the URL parser refuses is skipped. */
async function probe(method: string, path: string, headers: Record<string, string>, body?: string) {
  let req: Request;
  try {
    req = new Request(new URL(path, "http://localhost"), {
      method,
      headers,
      ...(body !== undefined && method !== "GET" && method !== "HEAD" ? { body } : {}),
    });
  } catch {
    return; // not a request a client could send
  }
  seen.cases++;
  const res = await h.app.request(req);
  const text = await res.text();
  const what = `${method} ${path.slice(0, 200)} ${JSON.stringify(headers).slice(0, 200)} ${String(body).slice(0, 300)} → ${res.status} ${text.slice(0, 300)}`;
  if (res.status >= 500) seen.fivexx++;
  expect(res.status, what).toBeLessThan(500);
  expect(STACK.test(text), `stack trace in ${what}`).toBe(false);
  // HEAD answers have no body to carry the error.
  if (res.status >= 400 && method !== "HEAD") {
    let parsed: { error?: { code?: unknown; message?: unknown } } | undefined;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    expect(parsed?.error?.code, what).toBe(res.status);
    expect(typeof parsed?.error?.message === "string" && parsed.error.message.length > 0, what).toBe(true);
  }
}

const FIELD_NAMES = [
  "id",
  "name",
  "visibility",
  "protected",
  "os_hidden",
  "owner",
  "disk_format",
  "container_format",
  "min_disk",
  "min_ram",
  "tags",
  "upload_size",
  "upload_sha256",
  "status",
  "checksum",
  "size",
  "locations",
  "deleted",
  "properties",
  "os_glance_x",
  "staged_size",
  "multipart_upload_id",
  "__proto__",
  "constructor",
  "prototype",
  "toString",
  "hasOwnProperty",
  "",
];
const text = fc.oneof(
  fc.string(),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.constantFrom("", " ", "%", "%2F", "..", "\u0000", "\ud800", "é", "🙂", "a".repeat(3000)),
  fc.integer().map(String),
  fc.uuid(),
);
const key = fc.oneof(fc.constantFrom(...FIELD_NAMES), text);
const scalar = fc.oneof(
  text,
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom(2 ** 53, -1, 2 ** 31, 1e308, "public", "raw", "bare", "shared"),
);
const value: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: scalar },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.array(text, { maxLength: 5 }) },
);
const objectBody = fc.dictionary(key, value, { maxKeys: 12 });
const anyBody = fc.oneof(
  objectBody.map((o) => JSON.stringify(o)),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.string({ unit: "binary", maxLength: 200 }),
  fc.constantFrom("", "{", "[]", "null", "1e999", '{"__proto__": {"x": 1}}', '{"a": 1, "a": 2}'),
);
const contentType = fc.oneof(
  fc.constantFrom(
    "application/json",
    PATCH_TYPE,
    "application/openstack-images-v2.0-json-patch",
    "application/octet-stream",
    "text/plain; charset=utf-16",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
    "",
  ),
  fc.string({ maxLength: 60 }),
);
const role = fc.constantFrom("admin", "member", "reader", "other", "none");
/** Percent-encoded, or raw UTF-8 bytes encoded by hand where the text has lone surrogates. */
const encoded = (t: string) => {
  try {
    return encodeURIComponent(t);
  } catch {
    return [...new TextEncoder().encode(t)].map((b) => `%${b.toString(16).padStart(2, "0")}`).join("");
  }
};
const imageId = () =>
  fc.oneof(
    fc.constantFrom(...ids),
    fc.uuid(),
    text.map(encoded),
    text.map((t) => t.replace(/[?#]/g, "")),
  );

const headerSafe = (s: string) => s.replace(/[^\t\x20-\x7e]/g, "");

describe("API fuzz: no input is a 5xx, a stack trace or a 4xx without a message", () => {
  it("create bodies", async () => {
    await fc.assert(
      fc.asyncProperty(role, anyBody, contentType, async (r, body, type) => {
        await probe("POST", "/v2/images", { "X-Auth-Token": tokens[r] ?? "", "Content-Type": type }, body);
      }),
      { numRuns: 600 },
    );
  });

  it("JSON patches", async () => {
    const op = fc.record(
      {
        op: fc.oneof(fc.constantFrom("add", "replace", "remove", "move", "copy", "test"), text),
        path: fc.oneof(
          key.map((k) => `/${k.replace(/~/g, "~0").replace(/\//g, "~1")}`),
          text,
          fc.constantFrom("/", "", "/a/b", "/tags/0", "/properties/x", "/~2"),
        ),
        value,
        from: text,
      },
      { requiredKeys: ["op", "path"] },
    );
    const doc = fc.oneof(
      { weight: 4, arbitrary: fc.array(op, { maxLength: 6 }).map((ops) => JSON.stringify(ops)) },
      { weight: 1, arbitrary: anyBody },
    );
    await fc.assert(
      fc.asyncProperty(role, imageId(), doc, contentType, async (r, id, body, type) => {
        await probe(
          "PATCH",
          `/v2/images/${id}`,
          { "X-Auth-Token": tokens[r] ?? "", "Content-Type": type.length % 3 === 0 ? PATCH_TYPE : type },
          body,
        );
      }),
      { numRuns: 600 },
    );
  });

  it("list query strings", async () => {
    const qkey = fc.oneof(
      fc.constantFrom(
        "limit",
        "marker",
        "sort",
        "sort_key",
        "sort_dir",
        "visibility",
        "member_status",
        "name",
        "status",
        "owner",
        "tag",
        "size_min",
        "size_max",
        "protected",
        "os_hidden",
        "created_at",
        "updated_at",
        "id",
        "disk_format",
        "checksum",
        "__proto__",
        "constructor",
      ),
      text,
    );
    const qvalue = fc.oneof(
      text,
      fc.uuid(),
      fc.constantFrom(...ids),
      fc.constantFrom(
        "in:a,b",
        'in:"a,b",c',
        "gt:2024-01-01T00:00:00Z",
        "__proto__:2024-01-01",
        "constructor:1",
        "name:asc,id:desc",
        "-1",
        "1000000",
        "99999999999999999999999",
        "true",
        "all",
      ),
    );
    // Time filters with every operator spelling, inherited object keys included.
    const timeFilter = fc
      .tuple(
        fc.constantFrom("created_at", "updated_at"),
        fc.oneof(fc.constantFrom("gt", "neq", "__proto__", "constructor", "toString", "valueOf", ""), text),
        fc.oneof(fc.constantFrom("2024-01-01T00:00:00Z", "2024-13-45", "1"), text),
      )
      .map(([k, op, t]): [string, string] => [k, `${op}:${t}`]);
    const rawQuery = fc.oneof(
      fc
        .array(fc.oneof(fc.tuple(qkey, qvalue), timeFilter), { maxLength: 8 })
        .map((pairs) => new URLSearchParams(pairs).toString()),
      fc.string({ maxLength: 200 }),
      fc.constantFrom("marker=%", "limit=%zz", "&&==&", "sort=%00", `marker=${"x".repeat(5000)}`),
    );
    await fc.assert(
      fc.asyncProperty(role, rawQuery, async (r, query) => {
        await probe("GET", `/v2/images?${query}`, { "X-Auth-Token": tokens[r] ?? "" });
      }),
      { numRuns: 600 },
    );
  });

  it("path ids and sub-routes, with every method", async () => {
    const route = fc.constantFrom(
      "",
      "/file",
      "/stage",
      "/tags/t",
      "/members",
      "/members/p-bob",
      "/actions/deactivate",
      "/actions/reactivate",
      "/import",
      "/upload/parts",
      "/upload/complete",
      "/upload/cancel",
    );
    const member = fc.oneof(
      fc.constant(""),
      text.map((t) => `/${encoded(t)}`),
    );
    const method = fc.constantFrom("GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS");
    const prefix = fc.constantFrom(
      "/v2/images/",
      "/v2/quotas/",
      "/v2/images/%2F",
      "/v2/info/usage?project_id=",
    );
    await fc.assert(
      fc.asyncProperty(
        role,
        method,
        prefix,
        imageId(),
        route,
        member,
        fc.option(anyBody, { nil: undefined }),
        async (r, m, pre, id, sub, extra, body) => {
          const path = `${pre}${id}${pre.includes("?") ? "" : `${sub}${sub.startsWith("/members/") || sub.startsWith("/tags/") ? extra : ""}`}`;
          await probe(m, path, { "X-Auth-Token": tokens[r] ?? "", "Content-Type": "application/json" }, body);
        },
      ),
      { numRuns: 800 },
    );
  });

  it("headers: tokens and content types", async () => {
    const token = fc.oneof(
      role.map((r) => tokens[r] ?? ""),
      fc.string({ maxLength: 100 }),
      fc.constantFrom("a".repeat(8000), "Bearer", "eyJhbGciOiJub25lIn0.e30.", "x.y.z", ""),
      role.map((r) => `${tokens[r]}x`),
    );
    const scheme = fc.constantFrom("X-Auth-Token", "Authorization", "authorization", "X-AUTH-TOKEN");
    await fc.assert(
      fc.asyncProperty(
        scheme,
        token,
        contentType,
        fc.constantFrom(
          "GET /v2/images",
          "POST /v2/images",
          `PATCH /v2/images/${ids[0]}`,
          "GET /v2/info/usage",
        ),
        anyBody,
        async (header, tok, type, route, body) => {
          const [m, p] = route.split(" ") as [string, string];
          const value =
            header.toLowerCase() === "authorization" && tok.length % 2 === 0 ? `Bearer ${tok}` : tok;
          await probe(m, p, { [header]: headerSafe(value), "Content-Type": headerSafe(type) }, body);
        },
      ),
      { numRuns: 500 },
    );
  });
});
