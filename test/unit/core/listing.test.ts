import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { ImageRecord } from "../../../functions/core/image/image.ts";
import { indexOrder, listSources, mergeOrdered } from "../../../functions/core/images/listing.ts";
import { createImageService } from "../../../functions/core/images.ts";
import { parseListQuery } from "../../../functions/core/list-query.ts";
import type { ListedImage, ListOptions, ListSource } from "../../../functions/core/ports.ts";
import { fixedClock, MemoryImages, MemoryMembers, MemoryObjects, silentLog } from "../fakes.ts";

const alice = { userId: "alice", projectId: "p-alice", roles: ["member"] };
const admin = { userId: "admin", projectId: "p-admin", roles: ["admin"] };

const listed = (id: string, created_at: string): ListedImage => ({
  image: { id, created_at } as ImageRecord,
});

async function* from(items: ListedImage[]): AsyncIterable<ListedImage> {
  yield* items;
}

async function ids(source: AsyncIterable<ListedImage>): Promise<string[]> {
  const out: string[] = [];
  for await (const l of source) out.push(l.image.id);
  return out;
}

/** Counts how many images each listing source hands out: what a page costs the store. */
class CountingImages extends MemoryImages {
  pulled = 0;
  override async *list(source: ListSource, options: ListOptions): AsyncIterable<ListedImage> {
    for await (const l of super.list(source, options)) {
      this.pulled++;
      yield l;
    }
  }
}

describe("listing", () => {
  it("merges sources in one order and drops an image a second source yields again", async () => {
    const a = [listed("a3", "2026-03"), listed("a1", "2026-01")];
    const b = [listed("a3", "2026-03"), listed("b2", "2026-02"), listed("b0", "2026-00")];
    expect(await ids(mergeOrdered([from(a), from(b)], "desc"))).toEqual(["a3", "b2", "a1", "b0"]);
    expect(await ids(mergeOrdered([from([...a].reverse()), from([...b].reverse())], "asc"))).toEqual([
      "b0",
      "a1",
      "b2",
      "a3",
    ]);
  });

  it("serves Glance's default order and created_at either way from the index, nothing else", () => {
    expect(indexOrder(parseListQuery([]).sort)).toBe("desc");
    expect(indexOrder(parseListQuery([["sort", "created_at:asc"]]).sort)).toBe("asc");
    expect(indexOrder(parseListQuery([["sort_dir", "asc"]]).sort)).toBe("asc");
    expect(indexOrder(parseListQuery([["sort", "name:asc"]]).sort)).toBeUndefined();
    expect(indexOrder(parseListQuery([["sort", "created_at:asc,id:desc"]]).sort)).toBeUndefined();
  });

  it("reads the sources a caller's list needs", () => {
    const q = (visibility?: string) => parseListQuery(visibility ? [["visibility", visibility]] : []);
    expect(listSources(admin, q())).toEqual([{ kind: "all" }]);
    expect(listSources(admin, q("public"))).toEqual([{ kind: "visibility", visibility: "public" }]);
    expect(listSources(alice, q()).map((s) => s.kind)).toEqual(["owner", "visibility", "member"]);
    expect(listSources(alice, q("private"))).toEqual([{ kind: "owner", owner: "p-alice" }]);
  });

  it("a page in index order reads about a page from each source, and markers page through all", async () => {
    const images = new CountingImages();
    images.members = new MemoryMembers();
    const clock = fixedClock();
    const service = createImageService({
      images,
      objects: new MemoryObjects(),
      members: images.members,
      clock,
      log: silentLog,
      newId: randomUUID,
      uploadUrlTtlSeconds: 600,
      downloadUrlTtlSeconds: 60,
    });
    const created: string[] = [];
    for (let i = 0; i < 60; i++) {
      clock.advance(1000);
      const [fields, caller] = i % 3 ? [{ visibility: "private" }, alice] : [{ visibility: "public" }, admin];
      created.push((await service.create({ name: `n${i}`, ...fields }, caller)).image.id);
    }
    images.pulled = 0;
    const first = await service.list(alice, parseListQuery([["limit", "5"]]));
    expect(first.images.map((i) => i.id)).toEqual(created.slice(-5).reverse());
    expect(first.more).toBe(true);
    // Own and public sources, each at most a page and one: not the 60 candidates both hold.
    expect(images.pulled).toBeLessThanOrEqual(2 * 6);

    const seen: string[] = [];
    let marker: string | undefined;
    for (;;) {
      const params: [string, string][] = [["limit", "7"]];
      if (marker) params.push(["marker", marker]);
      const page = await service.list(alice, parseListQuery(params));
      seen.push(...page.images.map((i) => i.id));
      marker = page.images.at(-1)?.id;
      if (!page.more) break;
    }
    expect(seen).toEqual([...created].reverse());
  });
});
