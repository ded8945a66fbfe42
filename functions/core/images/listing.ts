import { InvalidRequestError } from "../errors.ts";
import { type Caller, canSee, isAdmin, listable, type MemberStatus } from "../image/access.ts";
import type { ImageRecord } from "../image/image.ts";
import { type ListQuery, paginate } from "../list-query.ts";
import type { ImageContext } from "./context.ts";

/** Listing images per Glance's visibility rules, filters, sort orders and markers. */
export function imageListing(ctx: ImageContext) {
  const { images, members } = ctx;
  return {
    /**
     * One page of the images the caller may list, filtered and sorted per Glance: own, public and accepted
     * shares by default; community ones with `visibility=community|all`; everything for admins.
     */
    async list(caller: Caller, query: ListQuery): Promise<{ images: ImageRecord[]; more: boolean }> {
      const want = {
        memberStatus: query.memberStatus,
        community: query.visibility === "community" || query.visibility === "all",
      };
      const statusOf = new Map<string, MemberStatus>();
      let candidates: (ImageRecord | undefined)[];
      if (isAdmin(caller)) candidates = await images.listAll();
      else {
        const [own, pub, com, shares] = await Promise.all([
          images.listByOwner(caller.projectId),
          images.listByVisibility("public"),
          want.community ? images.listByVisibility("community") : Promise.resolve([]),
          members.listByMember(caller.projectId),
        ]);
        const wanted = shares.filter((m) => want.memberStatus === "all" || m.status === want.memberStatus);
        for (const m of wanted) statusOf.set(m.image_id, m.status);
        const shared = await Promise.all(wanted.map((m) => images.get(m.image_id)));
        candidates = [...own, ...pub, ...com, ...shared];
      }
      const byId = new Map<string, ImageRecord>();
      for (const image of candidates) {
        if (
          image &&
          listable(image, caller, statusOf.get(image.id), want) &&
          query.filters.every((f) => f(image))
        ) {
          byId.set(image.id, image);
        }
      }
      let marker: ImageRecord | undefined;
      if (query.marker !== undefined) {
        const m = await images.get(query.marker);
        if (!m || !canSee(m, caller, await ctx.membershipOf(m, caller))) {
          throw new InvalidRequestError(`The marker ${query.marker} could not be found.`, "BAD_MARKER");
        }
        marker = m;
      }
      const { page, more } = paginate([...byId.values()], query, marker);
      return { images: page, more };
    },
  };
}
