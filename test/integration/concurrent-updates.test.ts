import { describe, expect, it } from "vitest";
import { api, getStack } from "./setup/stack.ts";

const PATCH = "application/openstack-images-v2.1-json-patch";

async function createImage(): Promise<string> {
  const res = await api(
    "/v2/images",
    { method: "POST", body: JSON.stringify({ name: "concurrent" }) },
    getStack().tokens.alice,
  );
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

async function show(id: string): Promise<Record<string, unknown> & { tags: string[] }> {
  const res = await api(`/v2/images/${id}`, {}, getStack().tokens.alice);
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown> & { tags: string[] };
}

/** Requests that read, change and rewrite the same record at once: none may undo another. */
describe("concurrent changes to one image lose nothing (DynamoDB Local)", () => {
  it("tags added at once are all kept, and tags removed at once are all gone", async () => {
    const id = await createImage();
    const tags = Array.from({ length: 12 }, (_, i) => `tag-${i}`);
    const added = await Promise.all(
      tags.map((t) => api(`/v2/images/${id}/tags/${t}`, { method: "PUT" }, getStack().tokens.alice)),
    );
    expect(added.map((r) => r.status)).toEqual(tags.map(() => 204));
    expect([...(await show(id)).tags].sort()).toEqual([...tags].sort());

    const removed = await Promise.all(
      tags
        .slice(0, 6)
        .map((t) => api(`/v2/images/${id}/tags/${t}`, { method: "DELETE" }, getStack().tokens.alice)),
    );
    expect(removed.map((r) => r.status)).toEqual(tags.slice(0, 6).map(() => 204));
    expect([...(await show(id)).tags].sort()).toEqual([...tags.slice(6)].sort());
  });

  it("extra properties patched at once are all kept", async () => {
    const id = await createImage();
    const keys = Array.from({ length: 10 }, (_, i) => `prop_${i}`);
    const patched = await Promise.all(
      keys.map((k) =>
        api(
          `/v2/images/${id}`,
          {
            method: "PATCH",
            headers: { "content-type": PATCH },
            body: JSON.stringify([{ op: "add", path: `/${k}`, value: `value of ${k}` }]),
          },
          getStack().tokens.alice,
        ),
      ),
    );
    expect(patched.map((r) => r.status)).toEqual(keys.map(() => 200));
    const image = await show(id);
    for (const k of keys) expect(image[k], k).toBe(`value of ${k}`);
  });

  it("visibility changed back and forth at once leaves the listings agreeing with the record", async () => {
    const id = await createImage();
    const values = Array.from({ length: 10 }, (_, i) => (i % 2 ? "private" : "community"));
    const patched = await Promise.all(
      values.map((v) =>
        api(
          `/v2/images/${id}`,
          {
            method: "PATCH",
            headers: { "content-type": PATCH },
            body: JSON.stringify([{ op: "replace", path: "/visibility", value: v }]),
          },
          getStack().tokens.alice,
        ),
      ),
    );
    expect(patched.map((r) => r.status)).toEqual(values.map(() => 200));
    const final = (await show(id)).visibility;
    // Another project finds a community image through the visibility index, and a private one not at all.
    const listed = await api("/v2/images?visibility=community&limit=1000", {}, getStack().tokens.bob);
    expect(listed.status).toBe(200);
    const ids = ((await listed.json()) as { images: { id: string }[] }).images.map((i) => i.id);
    expect(ids.includes(id)).toBe(final === "community");
  });
});
