import { beforeAll, describe, expect, it } from "vitest";
import { PATCH_TYPE, testApp } from "./harness.ts";

/**
 * Every verb × visibility × role through the HTTP app (in-memory fakes): allowed calls succeed, the others get
 * Glance's status — 404 where Glance hides the image's existence, 403 where the caller may see it but not do it.
 */

const ROLES = {
  admin: { project: "p-admin", roles: ["admin"] },
  owner: { project: "p-own", roles: ["member"] },
  ownerReader: { project: "p-own", roles: ["reader"] },
  other: { project: "p-other", roles: ["member"] },
  accepted: { project: "p-acc", roles: ["member"] },
  pending: { project: "p-pen", roles: ["member"] },
  rejected: { project: "p-rej", roles: ["member"] },
} as const;
type Role = keyof typeof ROLES;
const VISIBILITIES = ["public", "community", "shared", "private"] as const;
type Vis = (typeof VISIBILITIES)[number];

let h: Awaited<ReturnType<typeof testApp>>;
const tokens = {} as Record<Role, string>;

beforeAll(async () => {
  h = await testApp();
  for (const [name, r] of Object.entries(ROLES))
    tokens[name as Role] = await h.token(name, r.project, [...r.roles]);
});

/** An active image of `p-own` with members p-acc (accepted), p-pen (pending), p-rej (rejected), then `vis`. */
async function fixture(vis: Vis): Promise<string> {
  const created = await h.call("POST", "/v2/images", tokens.owner, {
    name: `m-${vis}`,
    visibility: "shared",
  });
  const id = ((await created.json()) as { id: string }).id;
  for (const [p, status] of [
    ["p-acc", "accepted"],
    ["p-pen", "pending"],
    ["p-rej", "rejected"],
  ] as const) {
    await h.call("POST", `/v2/images/${id}/members`, tokens.owner, { member: p });
    if (status !== "pending") await h.members.setStatus(id, p, status, "2026-01-01T00:00:00.000Z");
  }
  if (vis !== "shared") {
    const res = await h.call(
      "PATCH",
      `/v2/images/${id}`,
      tokens.admin,
      [{ op: "replace", path: "/visibility", value: vis }],
      PATCH_TYPE,
    );
    expect(res.status).toBe(200);
  }
  await h.images.transition(id, "startImport", {});
  await h.images.transition(id, "finishImport", {});
  return id;
}

const canSee = (r: Role, v: Vis) =>
  r === "admin" ||
  r === "owner" ||
  r === "ownerReader" ||
  v === "public" ||
  v === "community" ||
  (v === "shared" && (r === "accepted" || r === "pending" || r === "rejected"));
const canModify = (r: Role) => r === "admin" || r === "owner";
const isMember = (r: Role) => r === "accepted" || r === "pending" || r === "rejected";
/** Allowed → `ok`; visible but refused → 403; invisible → 404. */
const gate = (r: Role, v: Vis, allowed: boolean, ok: number) => (!canSee(r, v) ? 404 : allowed ? ok : 403);
/** Member routes: only shared images have members (403 for others one may see). */
const memberGate = (r: Role, v: Vis, allowed: boolean, ok: number) =>
  !canSee(r, v) ? 404 : v !== "shared" ? 403 : allowed ? ok : 403;

type Verb = {
  name: string;
  expected: (r: Role, v: Vis) => number | boolean;
  act: (id: string, r: Role) => Promise<number | boolean>;
};

const VERBS: Verb[] = [
  {
    name: "show",
    expected: (r, v) => gate(r, v, true, 200),
    act: async (id, r) => (await h.call("GET", `/v2/images/${id}`, tokens[r])).status,
  },
  {
    name: "default list contains it",
    expected: (r, v) =>
      r === "admin" ||
      r === "owner" ||
      r === "ownerReader" ||
      v === "public" ||
      (v === "shared" && r === "accepted"),
    act: async (id, r) => {
      const body = (await (await h.call("GET", "/v2/images?limit=1000", tokens[r])).json()) as {
        images: { id: string }[];
      };
      return body.images.some((i) => i.id === id);
    },
  },
  {
    name: "download",
    expected: (r, v) => gate(r, v, true, 302),
    act: async (id, r) => (await h.call("GET", `/v2/images/${id}/file`, tokens[r])).status,
  },
  {
    name: "update",
    expected: (r, v) => gate(r, v, canModify(r), 200),
    act: async (id, r) =>
      (
        await h.call(
          "PATCH",
          `/v2/images/${id}`,
          tokens[r],
          [{ op: "replace", path: "/name", value: "x" }],
          PATCH_TYPE,
        )
      ).status,
  },
  {
    name: "add tag",
    expected: (r, v) => gate(r, v, canModify(r), 204),
    act: async (id, r) => (await h.call("PUT", `/v2/images/${id}/tags/t`, tokens[r])).status,
  },
  {
    name: "deactivate",
    expected: (r, v) => gate(r, v, canModify(r), 204),
    act: async (id, r) => (await h.call("POST", `/v2/images/${id}/actions/deactivate`, tokens[r])).status,
  },
  {
    name: "delete",
    expected: (r, v) => gate(r, v, canModify(r), 204),
    act: async (id, r) => (await h.call("DELETE", `/v2/images/${id}`, tokens[r])).status,
  },
  {
    name: "list members",
    expected: (r, v) => memberGate(r, v, true, 200),
    act: async (id, r) => (await h.call("GET", `/v2/images/${id}/members`, tokens[r])).status,
  },
  {
    name: "add member",
    expected: (r, v) => memberGate(r, v, canModify(r), 200),
    act: async (id, r) =>
      (await h.call("POST", `/v2/images/${id}/members`, tokens[r], { member: "p-new" })).status,
  },
  {
    name: "accept a membership (own, or p-acc's for non-members)",
    expected: (r, v) => memberGate(r, v, isMember(r), 200),
    act: async (id, r) => {
      const member = isMember(r) ? ROLES[r].project : "p-acc";
      return (await h.call("PUT", `/v2/images/${id}/members/${member}`, tokens[r], { status: "accepted" }))
        .status;
    },
  },
];

describe("authorization matrix", () => {
  for (const verb of VERBS) {
    for (const vis of VISIBILITIES) {
      it(`${verb.name} on a ${vis} image`, async () => {
        const got: Record<string, number | boolean> = {};
        const want: Record<string, number | boolean> = {};
        for (const role of Object.keys(ROLES) as Role[]) {
          got[role] = await verb.act(await fixture(vis), role);
          want[role] = verb.expected(role, vis);
        }
        expect(got).toEqual(want);
      });
    }
  }
});
