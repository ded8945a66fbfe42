import { beforeAll, describe, expect, it } from "vitest";
import { PATCH_TYPE, testApp } from "./harness.ts";

/**
 * Every verb × visibility × role through the HTTP app (in-memory fakes): allowed calls succeed, the others get
 * Glance's status — 404 where Glance hides the image's existence, 403 where the caller may see it but not do it.
 * Roles: `admin` and `member` write; `reader`, and a token with no roles at all, only read — in the owner's
 * project as anywhere else.
 */

const ROLES = {
  admin: { project: "p-admin", roles: ["admin"] },
  owner: { project: "p-own", roles: ["member"] },
  ownerReader: { project: "p-own", roles: ["reader"] },
  ownerNoRoles: { project: "p-own", roles: [] },
  other: { project: "p-other", roles: ["member"] },
  otherReader: { project: "p-other", roles: ["reader"] },
  accepted: { project: "p-acc", roles: ["member"] },
  acceptedReader: { project: "p-acc", roles: ["reader"] },
  pending: { project: "p-pen", roles: ["member"] },
  rejected: { project: "p-rej", roles: ["member"] },
} as const;
type Role = keyof typeof ROLES;
const ALL_ROLES = Object.keys(ROLES) as Role[];
const VISIBILITIES = ["public", "community", "shared", "private"] as const;
type Vis = (typeof VISIBILITIES)[number];
/** What the image is when the verb runs: imported, waiting for its bytes, or waiting for a multipart upload. */
type State = "active" | "queued" | "multipart";

let h: Awaited<ReturnType<typeof testApp>>;
const tokens = {} as Record<Role, string>;

beforeAll(async () => {
  h = await testApp();
  for (const [name, r] of Object.entries(ROLES))
    tokens[name as Role] = await h.token(name, r.project, [...r.roles]);
});

/** An image of `p-own` with members p-acc (accepted), p-pen (pending), p-rej (rejected), then `vis`. */
async function fixture(vis: Vis, state: State = "active"): Promise<string> {
  const created = await h.call("POST", "/v2/images", tokens.owner, {
    name: `m-${vis}`,
    visibility: "shared",
    ...(state === "multipart" ? { upload_size: 16 * 1024 * 1024 } : {}),
  });
  expect(created.status).toBe(201);
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
  if (state === "active") {
    await h.images.transition(id, "startImport", {});
    await h.images.transition(id, "finishImport", {});
  }
  return id;
}

const inOwnerProject = (r: Role) => ROLES[r].project === "p-own";
const isMember = (r: Role) =>
  r === "accepted" || r === "acceptedReader" || r === "pending" || r === "rejected";
const writes = (r: Role) =>
  (ROLES[r].roles as readonly string[]).some((x) => x === "admin" || x === "member");
const canSee = (r: Role, v: Vis) =>
  r === "admin" ||
  inOwnerProject(r) ||
  v === "public" ||
  v === "community" ||
  (v === "shared" && isMember(r));
/** Only the owner's writers and admins change an image; readers of the owner's project see it, never change it. */
const canModify = (r: Role) => r === "admin" || (inOwnerProject(r) && writes(r));
/** Allowed → `ok`; visible but refused → 403; invisible → 404. */
const gate = (r: Role, v: Vis, allowed: boolean, ok: number) => (!canSee(r, v) ? 404 : allowed ? ok : 403);
/** Multipart routes judge visibility without memberships: a member of a shared image is told 404. */
const uploadGate = (r: Role, v: Vis, ok: number) =>
  canModify(r) ? ok : r === "admin" || inOwnerProject(r) || v === "public" || v === "community" ? 403 : 404;
/** Member routes: only shared images have members (403 for others one may see). */
const memberGate = (r: Role, v: Vis, allowed: boolean, ok: number) =>
  !canSee(r, v) ? 404 : v !== "shared" ? 403 : allowed ? ok : 403;

type Verb = {
  name: string;
  state?: State;
  expected: (r: Role, v: Vis) => number | boolean;
  act: (id: string, r: Role) => Promise<number | boolean>;
};
const status = async (res: Response | Promise<Response>) => (await res).status;

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
      inOwnerProject(r) ||
      v === "public" ||
      (v === "shared" && (r === "accepted" || r === "acceptedReader")),
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
    expected: (r, v) => memberGate(r, v, isMember(r) && writes(r), 200),
    act: async (id, r) => {
      const member = isMember(r) ? ROLES[r].project : "p-acc";
      return (await h.call("PUT", `/v2/images/${id}/members/${member}`, tokens[r], { status: "accepted" }))
        .status;
    },
  },
  {
    name: "remove member",
    expected: (r, v) =>
      // The owner's project sees every membership, a member only its own (another's is 404 to it); only
      // the owner's writers and admins remove one.
      !canSee(r, v)
        ? 404
        : v !== "shared"
          ? 403
          : canModify(r)
            ? 204
            : inOwnerProject(r) || ROLES[r].project === "p-acc"
              ? 403
              : 404,
    act: (id, r) => status(h.call("DELETE", `/v2/images/${id}/members/p-acc`, tokens[r])),
  },
  {
    name: "remove tag",
    expected: (r, v) => gate(r, v, canModify(r), 204),
    act: async (id, r) => {
      await h.call("PUT", `/v2/images/${id}/tags/old`, tokens.owner);
      return status(h.call("DELETE", `/v2/images/${id}/tags/old`, tokens[r]));
    },
  },
  {
    name: "reactivate",
    expected: (r, v) => gate(r, v, canModify(r), 204),
    act: async (id, r) => {
      await h.call("POST", `/v2/images/${id}/actions/deactivate`, tokens.owner);
      return status(h.call("POST", `/v2/images/${id}/actions/reactivate`, tokens[r]));
    },
  },
  {
    name: "show carries the upload link",
    state: "queued",
    expected: (r, v) => canSee(r, v) && canModify(r),
    act: async (id, r) => {
      const res = await h.call("GET", `/v2/images/${id}`, tokens[r]);
      return res.status === 200 && ((await res.json()) as { upload: unknown }).upload !== null;
    },
  },
  {
    name: "update a queued image",
    state: "queued",
    expected: (r, v) => gate(r, v, canModify(r), 200),
    act: (id, r) =>
      status(
        h.call(
          "PATCH",
          `/v2/images/${id}`,
          tokens[r],
          [{ op: "replace", path: "/disk_format", value: "raw" }],
          PATCH_TYPE,
        ),
      ),
  },
  {
    name: "web-download import",
    state: "queued",
    expected: (r, v) => gate(r, v, canModify(r), 202),
    act: (id, r) =>
      status(
        h.call("POST", `/v2/images/${id}/import`, tokens[r], {
          method: { name: "web-download", uri: "https://images.example/a.img" },
        }),
      ),
  },
  {
    name: "delete a queued image",
    state: "queued",
    expected: (r, v) => gate(r, v, canModify(r), 204),
    act: (id, r) => status(h.call("DELETE", `/v2/images/${id}`, tokens[r])),
  },
  {
    name: "show carries the multipart plan",
    state: "multipart",
    expected: (r, v) => canSee(r, v) && canModify(r),
    act: async (id, r) => {
      const res = await h.call("GET", `/v2/images/${id}`, tokens[r]);
      return res.status === 200 && ((await res.json()) as { upload: unknown }).upload !== null;
    },
  },
  {
    name: "list uploaded parts",
    state: "multipart",
    expected: (r, v) => uploadGate(r, v, 200),
    act: (id, r) => status(h.call("GET", `/v2/images/${id}/upload/parts`, tokens[r])),
  },
  {
    name: "sign part links",
    state: "multipart",
    expected: (r, v) => uploadGate(r, v, 200),
    act: (id, r) => status(h.call("POST", `/v2/images/${id}/upload/parts`, tokens[r], { parts: [1] })),
  },
  {
    name: "complete the upload (no parts yet: 409 once allowed)",
    state: "multipart",
    expected: (r, v) => uploadGate(r, v, 409),
    act: (id, r) => status(h.call("POST", `/v2/images/${id}/upload/complete`, tokens[r], {})),
  },
  {
    name: "cancel the upload",
    state: "multipart",
    expected: (r, v) => uploadGate(r, v, 204),
    act: (id, r) => status(h.call("POST", `/v2/images/${id}/upload/cancel`, tokens[r])),
  },
];

describe("authorization matrix", () => {
  for (const verb of VERBS) {
    for (const vis of VISIBILITIES) {
      it(`${verb.name} on a ${vis} image`, async () => {
        const got: Record<string, number | boolean> = {};
        const want: Record<string, number | boolean> = {};
        for (const role of ALL_ROLES) {
          got[role] = await verb.act(await fixture(vis, verb.state), role);
          want[role] = verb.expected(role, vis);
        }
        expect(got).toEqual(want);
      });
    }
  }

  it("create: members and admins only; a reader or a token without roles gets 403 and holds nothing", async () => {
    const got: Record<string, number> = {};
    const want: Record<string, number> = {};
    const before = await h.images.listAll();
    const uploadsBefore = h.storage.pending.size;
    for (const role of ALL_ROLES) {
      // A declared size above the multipart threshold: an allowed create starts a storage upload.
      const res = await h.call("POST", "/v2/images", tokens[role], {
        name: "c",
        upload_size: 16 * 1024 * 1024,
      });
      got[role] = res.status;
      want[role] = writes(role) ? 201 : 403;
      if (res.status === 403) {
        const body = (await res.json()) as { error: { code: number; message: string; reason: string } };
        expect(body.error).toMatchObject({ code: 403, reason: "FORBIDDEN" });
        expect(body.error.message).toMatch(/not authorized/);
      }
    }
    expect(got).toEqual(want);
    const writers = ALL_ROLES.filter(writes).length;
    expect((await h.images.listAll()).length - before.length).toBe(writers);
    expect(h.storage.pending.size - uploadsBefore).toBe(writers);
  });

  it("quotas: only an admin sets limits; anyone reads their own project's usage", async () => {
    for (const role of ALL_ROLES) {
      const put = await h.call("PUT", "/v2/quotas/p-own", tokens[role], { image_count_total: 5 });
      expect(put.status, role).toBe(role === "admin" ? 200 : 403);
      const usage = await h.call("GET", "/v2/info/usage", tokens[role]);
      expect(usage.status, role).toBe(200);
    }
  });
});
