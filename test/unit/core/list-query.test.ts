import { describe, expect, it } from "vitest";
import { InvalidRequestError } from "../../../functions/core/errors.ts";
import type { ImageRecord } from "../../../functions/core/image/image.ts";
import { paginate, parseListQuery, splitInList } from "../../../functions/core/list-query.ts";
import { imageRecord } from "../fakes.ts";

const image = imageRecord;
const id = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`;
const q = (s: string) => parseListQuery([...new URLSearchParams(s).entries()]);
const matches = (query: string, img: ImageRecord) => q(query).filters.every((f) => f(img));

describe("parseListQuery", () => {
  it("defaults: 25 per page, newest first, hidden images out, accepted shares", () => {
    const query = q("");
    expect(query.limit).toBe(25);
    expect(query.sort).toEqual([
      { key: "created_at", dir: "desc" },
      { key: "id", dir: "desc" },
    ]);
    expect(query.memberStatus).toBe("accepted");
    expect(query.visibility).toBeUndefined();
    expect(matches("", image({ os_hidden: true }))).toBe(false);
    expect(matches("os_hidden=true", image({ os_hidden: true }))).toBe(true);
    expect(matches("os_hidden=true", image({}))).toBe(false);
  });

  it("caps the page at 1000 and refuses bad limits", () => {
    expect(q("limit=200").limit).toBe(200);
    expect(q("limit=5000").limit).toBe(1000);
    expect(() => q("limit=-1")).toThrow(InvalidRequestError);
    expect(() => q("limit=abc")).toThrow(/integer/);
  });

  it("filters on fields, in: lists, tags (AND), sizes, booleans and extra properties", () => {
    const img = image({
      name: "cirros",
      tags: ["a", "b"],
      size: 50,
      protected: true,
      properties: { os: "x" },
    });
    expect(matches("name=cirros", img)).toBe(true);
    expect(matches("name=other", img)).toBe(false);
    expect(matches("name=in:other,cirros", img)).toBe(true);
    expect(matches(`id=in:${id(1)},${img.id}`, img)).toBe(true);
    expect(matches("tag=a&tag=b", img)).toBe(true);
    expect(matches("tag=a&tag=c", img)).toBe(false);
    expect(matches("size_min=50&size_max=50", img)).toBe(true);
    expect(matches("size_min=51", img)).toBe(false);
    expect(matches("protected=true", img)).toBe(true);
    expect(matches("protected=false", img)).toBe(false);
    expect(matches("os=x", img)).toBe(true);
    expect(matches("os=y", img)).toBe(false);
    expect(matches("disk_format=raw&container_format=bare&status=active", img)).toBe(true);
    expect(matches("min_ram=0", img)).toBe(true);
    expect(matches("visibility=shared", img)).toBe(true);
    expect(matches("visibility=private", img)).toBe(false);
  });

  it("filters times with Glance's operators", () => {
    const img = image({ created_at: "2026-01-02T03:04:05.678Z" });
    expect(matches("created_at=gt:2026-01-01T00:00:00Z", img)).toBe(true);
    expect(matches("created_at=lt:2026-01-01T00:00:00Z", img)).toBe(false);
    expect(matches("created_at=gte:2026-01-02T03:04:05Z", img)).toBe(true);
    expect(matches("created_at=eq:2026-01-02T03:04:05Z", img)).toBe(true);
    expect(matches("created_at=neq:2026-01-02T03:04:05Z", img)).toBe(false);
    expect(matches("updated_at=lte:2026-01-01T00:00:00Z", img)).toBe(true);
    expect(() => q("created_at=gt:yesterday")).toThrow(/ISO 8601/);
    expect(() => q("created_at=about:2026-01-01T00:00:00Z")).toThrow(/operator/);
  });

  it("refuses unknown visibility, member_status, status, booleans and sizes", () => {
    for (const bad of [
      "visibility=everyone",
      "member_status=maybe",
      "status=saving",
      "protected=perhaps",
      "size_min=x",
    ]) {
      expect(() => q(bad), bad).toThrow(InvalidRequestError);
    }
    expect(q("visibility=all").visibility).toBe("all");
    expect(q("member_status=all").memberStatus).toBe("all");
  });

  it("parses both sort syntaxes, refuses mixing them and bad keys", () => {
    expect(q("sort_key=name&sort_dir=asc").sort.slice(0, 1)).toEqual([{ key: "name", dir: "asc" }]);
    expect(q("sort_key=name&sort_key=size&sort_dir=asc&sort_dir=desc").sort.slice(0, 2)).toEqual([
      { key: "name", dir: "asc" },
      { key: "size", dir: "desc" },
    ]);
    expect(q("sort=name:asc,size").sort.slice(0, 2)).toEqual([
      { key: "name", dir: "asc" },
      { key: "size", dir: "desc" },
    ]);
    expect(() => q("sort=name&sort_key=size")).toThrow(/combined/);
    expect(() => q("sort_key=bogus")).toThrow(/sort key/);
    expect(() => q("sort_key=name&sort_key=size&sort_dir=asc&sort_dir=desc&sort_dir=asc")).toThrow(
      /sort_dir/,
    );
    expect(() => q("sort_dir=sideways")).toThrow(/direction/);
  });

  it("splits quoted in: lists", () => {
    expect(splitInList('a,"b,c",d')).toEqual(["a", "b,c", "d"]);
  });
});

describe("paginate", () => {
  const all = [3, 1, 2, 5, 4].map((n) =>
    image({ id: id(n), name: `n${n}`, created_at: `2026-01-0${n}T00:00:00.000Z` }),
  );

  it("walks every image exactly once in sort order, whatever the page size", () => {
    for (const limit of [1, 2, 3, 10]) {
      const query = { ...q(`sort_key=name&sort_dir=asc&limit=${limit}`) };
      const seen: string[] = [];
      let marker: ImageRecord | undefined;
      for (;;) {
        const { page, more } = paginate(all, query, marker);
        seen.push(...page.map((i) => i.name ?? ""));
        if (!more) break;
        marker = page.at(-1);
      }
      expect(seen, `limit ${limit}`).toEqual(["n1", "n2", "n3", "n4", "n5"]);
    }
  });

  it("continues after a marker that the filters exclude", () => {
    const query = q("sort_key=name&sort_dir=asc&limit=10");
    const outside = image({ id: id(9), name: "n2b" });
    expect(paginate(all, query, outside).page.map((i) => i.name)).toEqual(["n3", "n4", "n5"]);
  });

  it("puts nulls first ascending, like Glance's database", () => {
    const withNull = [...all, image({ id: id(7), name: null })];
    const { page } = paginate(withNull, q("sort_key=name&sort_dir=asc&limit=2"), undefined);
    expect(page.map((i) => i.name)).toEqual([null, "n1"]);
  });
});
