import { InvalidRequestError, LimitExceededError, NotFoundError } from "../errors.ts";
import type { Caller } from "../image/access.ts";
import { MAX_NAME, MAX_TAGS } from "../image/fields.ts";
import { type ImageContext, LIVE } from "./context.ts";

/** Tags of an image: each change a compare-and-swap of the tag list. */
export function imageTags(ctx: ImageContext) {
  const { now } = ctx;
  return {
    /** Adds a tag (idempotent). */
    async addTag(id: string, tag: string, caller: Caller): Promise<void> {
      await ctx.modify(id, caller, (image) => {
        // Checked once the image is found and modifiable, so a hidden image still answers 404.
        if (tag.length === 0 || tag.length > MAX_NAME) {
          throw new InvalidRequestError(`A tag is 1 to ${MAX_NAME} characters long.`);
        }
        if (image.tags.includes(tag)) return undefined;
        if (image.tags.length >= MAX_TAGS)
          throw new LimitExceededError(`An image may have at most ${MAX_TAGS} tags.`);
        return { changes: { tags: [...image.tags, tag], updated_at: now() }, whileIn: LIVE, guard: ["tags"] };
      });
    },

    /** Removes a tag; a tag the image does not have is a 404, as in Glance. */
    async removeTag(id: string, tag: string, caller: Caller): Promise<void> {
      await ctx.modify(id, caller, (image) => {
        if (!image.tags.includes(tag))
          throw new NotFoundError(`Tag ${tag} not found on image ${id}.`, "TAG_NOT_FOUND");
        const tags = image.tags.filter((t) => t !== tag);
        return { changes: { tags, updated_at: now() }, whileIn: LIVE, guard: ["tags"] };
      });
    },
  };
}
