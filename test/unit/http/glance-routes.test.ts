import { readFileSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { memberSchema } from "../../../functions/http/api-schemas.ts";
import { openApiDocument } from "../../../functions/http/openapi.ts";
import { PATCH_TYPE, testApp } from "./harness.ts";

let h: Awaited<ReturnType<typeof testApp>>;
let alice: string;
let bob: string;

beforeAll(async () => {
  h = await testApp();
  alice = await h.token("alice", "p-alice", ["member"]);
  bob = await h.token("bob", "p-bob", ["member"]);
});

type Json = Record<string, unknown>;
const json = async (res: Response) => (await res.json()) as Json;
async function create(body: Json, tok = alice): Promise<string> {
  const res = await h.call("POST", "/v2/images", tok, body);
  expect(res.status).toBe(201);
  return (await json(res)).id as string;
}
async function glanceError(res: Response, status: number) {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  return ((await res.json()) as { error: { message: string; reason: string } }).error;
}
/** What glanceclient's warlock model checks: every required property, nothing undeclared, enum values. */
function conformsToMemberSchema(m: Json) {
  const props = (memberSchema() as unknown as { properties: Record<string, { enum?: string[] }> }).properties;
  expect(Object.keys(m).sort()).toEqual(Object.keys(props).sort());
  expect(props.status?.enum).toContain(m.status);
}

describe("PATCH /v2/images/{id}", () => {
  it("needs the JSON-patch media type (415 otherwise)", async () => {
    const id = await create({ name: "p" });
    const err = await glanceError(await h.call("PATCH", `/v2/images/${id}`, alice, []), 415);
    expect(err.message).toContain(PATCH_TYPE);
  });

  it("applies glanceclient's patch (replace absent schema fields, add properties, trailing replace /tags)", async () => {
    const id = await create({ name: "p", tags: ["red"] });
    const res = await h.call(
      "PATCH",
      `/v2/images/${id}`,
      alice,
      [
        { op: "replace", path: "/min_ram", value: 256 },
        { op: "add", path: "/os_distro", value: "debian" },
        { op: "replace", path: "/tags", value: ["red"] },
      ],
      PATCH_TYPE,
    );
    expect(res.status).toBe(200);
    expect(await json(res)).toMatchObject({ min_ram: 256, os_distro: "debian", tags: ["red"] });
    const ro = await glanceError(
      await h.call(
        "PATCH",
        `/v2/images/${id}`,
        alice,
        [{ op: "replace", path: "/checksum", value: "x" }],
        PATCH_TYPE,
      ),
      403,
    );
    expect(ro.message).toBe("Attribute 'checksum' is read-only.");
    await glanceError(
      await h.call("PATCH", `/v2/images/${id}`, alice, [{ op: "remove", path: "/nope" }], PATCH_TYPE),
      409,
    );
    await glanceError(
      await h.call("PATCH", `/v2/images/${id}`, alice, [{ op: "move", path: "/a" }], PATCH_TYPE),
      400,
    );
    const pub = await glanceError(
      await h.call(
        "PATCH",
        `/v2/images/${id}`,
        alice,
        [{ op: "replace", path: "/visibility", value: "public" }],
        PATCH_TYPE,
      ),
      403,
    );
    expect(pub.message).toBe("You are not authorized to complete publicize_image action.");
  });
});

describe("tags", () => {
  it("PUT and DELETE answer 204; deleting a missing tag is 404", async () => {
    const id = await create({ name: "t" });
    expect((await h.call("PUT", `/v2/images/${id}/tags/blue`, alice)).status).toBe(204);
    expect((await h.call("PUT", `/v2/images/${id}/tags/blue`, alice)).status).toBe(204);
    expect((await json(await h.call("GET", `/v2/images/${id}`, alice))).tags).toEqual(["blue"]);
    expect((await h.call("DELETE", `/v2/images/${id}/tags/blue`, alice)).status).toBe(204);
    await glanceError(await h.call("DELETE", `/v2/images/${id}/tags/blue`, alice), 404);
  });
});

describe("members", () => {
  it("share, accept, list: the member sees only itself, the image joins its list once accepted", async () => {
    const id = await create({ name: "shared-one", visibility: "shared" });
    const added = await h.call("POST", `/v2/images/${id}/members`, alice, { member: "p-bob" });
    expect(added.status).toBe(200);
    const member = await json(added);
    conformsToMemberSchema(member);
    expect(member).toMatchObject({ image_id: id, member_id: "p-bob", status: "pending" });
    await glanceError(await h.call("POST", `/v2/images/${id}/members`, alice, { member: "p-bob" }), 409);
    await h.call("POST", `/v2/images/${id}/members`, alice, { member: "p-carol" });

    const listIds = async (tok: string, query = "") =>
      ((await json(await h.call("GET", `/v2/images${query}`, tok))).images as Json[]).map((i) => i.id);
    expect((await h.call("GET", `/v2/images/${id}`, bob)).status).toBe(200);
    expect(await listIds(bob)).not.toContain(id);
    expect(await listIds(bob, "?member_status=pending")).toContain(id);

    const bobView = await json(await h.call("GET", `/v2/images/${id}/members`, bob));
    expect((bobView.members as Json[]).map((m) => m.member_id)).toEqual(["p-bob"]);
    const aliceView = await json(await h.call("GET", `/v2/images/${id}/members`, alice));
    expect((aliceView.members as Json[]).map((m) => m.member_id).sort()).toEqual(["p-bob", "p-carol"]);
    await glanceError(await h.call("GET", `/v2/images/${id}/members/p-carol`, bob), 404);

    await glanceError(
      await h.call("PUT", `/v2/images/${id}/members/p-bob`, alice, { status: "accepted" }),
      403,
    );
    const accepted = await h.call("PUT", `/v2/images/${id}/members/p-bob`, bob, { status: "accepted" });
    expect(accepted.status).toBe(200);
    conformsToMemberSchema(await json(accepted));
    expect(await listIds(bob)).toContain(id);
    await glanceError(await h.call("PUT", `/v2/images/${id}/members/p-bob`, bob, { status: "maybe" }), 400);

    await glanceError(await h.call("DELETE", `/v2/images/${id}/members/p-bob`, bob), 403);
    expect((await h.call("DELETE", `/v2/images/${id}/members/p-bob`, alice)).status).toBe(204);
    await glanceError(await h.call("GET", `/v2/images/${id}`, bob), 404);
  });

  it("only shared images have members", async () => {
    const id = await create({ name: "private-one", visibility: "private" });
    const err = await glanceError(
      await h.call("POST", `/v2/images/${id}/members`, alice, { member: "p-bob" }),
      403,
    );
    expect(err.message).toBe("Only shared images have members.");
  });
});

describe("list rules", () => {
  it("community images only with visibility=community; hidden ones only with os_hidden=true", async () => {
    const community = await create({ name: "com", visibility: "community" });
    const hidden = await create({ name: "hid", visibility: "community", os_hidden: true });
    const ids = async (q: string) =>
      ((await json(await h.call("GET", `/v2/images${q}`, bob))).images as Json[]).map((i) => i.id);
    expect(await ids("")).not.toContain(community);
    expect(await ids("?visibility=community")).toContain(community);
    expect(await ids("?visibility=community")).not.toContain(hidden);
    expect(await ids("?visibility=community&os_hidden=true")).toEqual([hidden]);
    expect((await h.call("GET", `/v2/images/${community}`, bob)).status).toBe(200);
  });

  it("pages with relative next links that keep the filters", async () => {
    const carol = await h.token("carol", "p-carol2", ["member"]);
    for (const n of ["c", "a", "b"]) await create({ name: n, tags: ["page"] }, carol);
    const names: string[] = [];
    let next: string | undefined = "/v2/images?limit=1&tag=page&sort_key=name&sort_dir=asc";
    while (next) {
      expect(next).toMatch(/^\/v2\/images\?.*tag=page/);
      const body = await json(await h.call("GET", next, carol));
      names.push(...(body.images as Json[]).map((i) => i.name as string));
      next = body.next as string | undefined;
    }
    expect(names).toEqual(["a", "b", "c"]);
    await glanceError(
      await h.call("GET", "/v2/images?marker=00000000-0000-4000-8000-00000000dead", carol),
      400,
    );
  });
});

describe("actions and import", () => {
  it("deactivate/reactivate: 204 on active images, 403 on queued ones", async () => {
    const id = await create({ name: "d" });
    await glanceError(await h.call("POST", `/v2/images/${id}/actions/deactivate`, alice), 403);
    await h.images.transition(id, "startImport", {});
    await h.images.transition(id, "finishImport", {});
    expect((await h.call("POST", `/v2/images/${id}/actions/deactivate`, alice)).status).toBe(204);
    expect((await json(await h.call("GET", `/v2/images/${id}`, alice))).status).toBe("deactivated");
    const dl = await glanceError(await h.call("GET", `/v2/images/${id}/file`, alice), 403);
    expect(dl.message).toContain("deactivated");
    expect((await h.call("POST", `/v2/images/${id}/actions/reactivate`, alice)).status).toBe(204);
    expect((await h.call("GET", `/v2/images/${id}/file`, alice)).status).toBe(302);
  });

  it("web-download: 202 for a public URL; 400 for other schemes, private addresses and unknown methods", async () => {
    const id = await create({ name: "w" });
    const imp = (body: unknown) => h.call("POST", `/v2/images/${id}/import`, alice, body);
    const refusal = await glanceError(
      await imp({ method: { name: "web-download", uri: "http://evil.example/x" } }),
      400,
    );
    expect(refusal.message).toMatch(/10\.0\.0\.7.*private/);
    expect(refusal.reason).toBe("URI_NOT_ALLOWED");
    await glanceError(await imp({ method: { name: "web-download", uri: "http://127.0.0.1:9/x" } }), 400);
    await glanceError(await imp({ method: { name: "web-download", uri: "file:///etc/passwd" } }), 400);
    await glanceError(await imp({ method: { name: "glance-direct" } }), 400);
    expect(
      (await imp({ method: { name: "web-download", uri: "https://images.example/a.img" } })).status,
    ).toBe(202);
    expect(h.jobs.at(-1)).toEqual({
      imageId: id,
      uri: "https://images.example/a.img",
      lease: expect.any(String),
    });
    // The image left `queued` when the fetch started: a second import is refused, and starts no fetch.
    expect(await h.images.get(id)).toMatchObject({
      status: "importing",
      import_lease_until: h.jobs.at(-1)?.lease,
    });
    const jobs = h.jobs.length;
    await glanceError(
      await imp({ method: { name: "web-download", uri: "https://images.example/a.img" } }),
      409,
    );
    expect(h.jobs.length).toBe(jobs);
  });

  it("web-download: of ten concurrent imports of one queued image, one starts a fetch", async () => {
    const id = await create({ name: "w10" });
    const answers = await Promise.all(
      Array.from({ length: 10 }, () =>
        h.call("POST", `/v2/images/${id}/import`, alice, {
          method: { name: "web-download", uri: "https://images.example/a.img" },
        }),
      ),
    );
    expect(answers.map((a) => a.status).sort()).toEqual([202, ...Array(9).fill(409)]);
    expect(h.jobs.filter((j) => j.imageId === id)).toHaveLength(1);
  });
});

describe("discovery", () => {
  it("info/import, info/stores, info/usage and the member schemas in Glance's shapes", async () => {
    const info = await json(await h.call("GET", "/v2/info/import", alice));
    expect(info["import-methods"]).toMatchObject({ value: ["web-download"] });
    expect(info.hangar).toMatchObject({ preferred_format: "raw", accepted_formats: ["raw", "iso"] });
    const stores = await json(await h.call("GET", "/v2/info/stores", alice));
    expect((stores.stores as Json[])[0]).toMatchObject({ default: true });
    const usage = (await json(await h.call("GET", "/v2/info/usage", alice))).usage as Record<string, Json>;
    expect(usage.image_count_total?.limit).toBe(-1);
    expect(usage.image_count_total?.usage).toBeGreaterThan(0);
    expect(Object.keys(usage).sort()).toEqual([
      "image_count_total",
      "image_count_uploading",
      "image_size_total",
      "image_stage_total",
    ]);
    const member = await json(await h.call("GET", "/v2/schemas/member", alice));
    expect(member).toMatchObject({
      name: "member",
      properties: { status: { enum: ["pending", "accepted", "rejected"] } },
    });
    const members = await json(await h.call("GET", "/v2/schemas/members", alice));
    expect(members).toMatchObject({ name: "members", properties: { members: { type: "array" } } });
  });

  it("serves the OpenAPI document without a token, and docs/openapi.json is up to date (npm run openapi)", async () => {
    const res = await h.app.request("/openapi.json");
    expect(res.status).toBe(200);
    const served = await res.json();
    expect(served).toEqual(openApiDocument());
    const written = JSON.parse(readFileSync(new URL("../../../docs/openapi.json", import.meta.url), "utf8"));
    expect(written, "docs/openapi.json is stale: run npm run openapi").toEqual(served);
  });
});
