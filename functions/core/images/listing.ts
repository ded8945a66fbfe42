import { InvalidRequestError } from "../errors.ts";
import { type Caller, canSee, isAdmin, listable } from "../image/access.ts";
import type { ImageRecord } from "../image/image.ts";
import { type ListQuery, paginate, type SortSpec } from "../list-query.ts";
import { type ListedImage, type ListSource, listPosition } from "../ports.ts";
import type { ImageContext } from "./context.ts";

/**
 * The sources a list reads for the caller and the visibility asked: admins read every image (or one
 * visibility's index); others their own, the public ones, the community ones when asked, and the images
 * shared with them. Each source is an index in creation order.
 */
export function listSources(
  caller: Caller,
  query: Pick<ListQuery, "visibility" | "memberStatus">,
): ListSource[] {
  const v = query.visibility;
  if (isAdmin(caller)) {
    return v === "public" || v === "community" ? [{ kind: "visibility", visibility: v }] : [{ kind: "all" }];
  }
  const own: ListSource = { kind: "owner", owner: caller.projectId };
  const shares: ListSource = { kind: "member", member: caller.projectId, status: query.memberStatus };
  const visible = (visibility: "public" | "community"): ListSource => ({ kind: "visibility", visibility });
  switch (v) {
    case "public":
    case "community":
      return [visible(v)];
    case "private":
      return [own];
    case "shared":
      return [own, shares];
    case "all":
      return [own, visible("public"), visible("community"), shares];
    default:
      return [own, visible("public"), shares];
  }
}

/**
 * The order the listing indexes keep (creation time, then id, both one way), if the sort asks for it.
 * Glance's default (`created_at:desc`) is one; any other needs every candidate read and sorted.
 */
export function indexOrder(sort: readonly SortSpec[]): "asc" | "desc" | undefined {
  const [first, second, ...rest] = sort;
  if (rest.length > 0 || first?.key !== "created_at" || second?.key !== "id") return undefined;
  return first.dir === second.dir ? first.dir : undefined;
}

/**
 * Merges sources that are each in one order into that order, dropping an image a second source yields
 * again (it comes right after itself: positions are unique). Pulls from a source only when its head has
 * been taken, so a page reads no further into a source than it needs.
 */
export async function* mergeOrdered(
  sources: AsyncIterable<ListedImage>[],
  order: "asc" | "desc",
): AsyncIterable<ListedImage> {
  const iterators = sources.map((s) => s[Symbol.asyncIterator]());
  const heads = await Promise.all(iterators.map((it) => it.next()));
  const before = (a: string, b: string) => (order === "asc" ? a < b : a > b);
  let last: string | undefined;
  for (;;) {
    let best = -1;
    let bestKey = "";
    heads.forEach((h, i) => {
      if (h.done) return;
      const key = listPosition(h.value.image);
      if (best < 0 || before(key, bestKey)) [best, bestKey] = [i, key];
    });
    const head = heads[best];
    const iterator = iterators[best];
    if (!head || head.done || !iterator) return;
    if (bestKey !== last) yield head.value;
    last = bestKey;
    heads[best] = await iterator.next();
  }
}

/** Listing images per Glance's visibility rules, filters, sort orders and markers. */
export function imageListing(ctx: ImageContext) {
  const { images } = ctx;

  /** The marker image, which must be one the caller may see (in or out of the filtered list). */
  async function markerImage(caller: Caller, marker: string | undefined): Promise<ImageRecord | undefined> {
    if (marker === undefined) return undefined;
    const m = await images.get(marker);
    if (!m || !canSee(m, caller, await ctx.membershipOf(m, caller))) {
      throw new InvalidRequestError(`The marker ${marker} could not be found.`, "BAD_MARKER");
    }
    return m;
  }

  /** Whether an image read from a source belongs in the caller's list as filtered. */
  function keep(caller: Caller, query: ListQuery) {
    const want = {
      memberStatus: query.memberStatus,
      community: query.visibility === "community" || query.visibility === "all",
    };
    return ({ image, memberStatus }: ListedImage) =>
      listable(image, caller, memberStatus, want) && query.filters.every((f) => f(image));
  }

  return {
    /**
     * One page of the images the caller may list, filtered and sorted per Glance: own, public and accepted
     * shares by default; community ones with `visibility=community|all`; everything for admins. In index
     * order (Glance's default) a page reads its sources from the marker on, only as far as it needs;
     * any other order reads every candidate and sorts them.
     */
    async list(caller: Caller, query: ListQuery): Promise<{ images: ImageRecord[]; more: boolean }> {
      const marker = await markerImage(caller, query.marker);
      const sources = listSources(caller, query);
      const wanted = keep(caller, query);
      const order = indexOrder(query.sort);
      if (order !== undefined) {
        const after = marker ? listPosition(marker) : undefined;
        const pageSize = query.limit + 1;
        const page: ImageRecord[] = [];
        const merged = mergeOrdered(
          sources.map((s) => images.list(s, { order, after, pageSize })),
          order,
        );
        for await (const listed of merged) {
          if (!wanted(listed)) continue;
          if (page.length === query.limit) return { images: page, more: true };
          page.push(listed.image);
        }
        return { images: page, more: false };
      }
      const candidates: ImageRecord[] = [];
      const all = mergeOrdered(
        sources.map((s) => images.list(s, { order: "desc", pageSize: 1000 })),
        "desc",
      );
      for await (const listed of all) if (wanted(listed)) candidates.push(listed.image);
      const { page, more } = paginate(candidates, query, marker);
      return { images: page, more };
    },
  };
}
