import {
  ConflictError,
  ForbiddenError,
  InvalidRequestError,
  LimitExceededError,
  NotFoundError,
} from "../errors.ts";
import { type Caller, canManageMembers, canWrite, isAdmin, type MemberStatus } from "../image/access.ts";
import { MAX_NAME } from "../image/fields.ts";
import type { ImageRecord } from "../image/image.ts";
import { type ImageMember, MAX_MEMBERS_PER_IMAGE } from "../image/members.ts";
import type { ImageContext } from "./context.ts";

/** Owners and admins see every member of an image; members only themselves. */
function canSeeAllMembers(image: ImageRecord, caller: Caller): boolean {
  return isAdmin(caller) || image.owner === caller.projectId;
}

const memberNotFound = (id: string, memberId: string) =>
  new NotFoundError(`Member ${memberId} of image ${id} not found.`, "MEMBER_NOT_FOUND");

/** Members of `shared` images: the owner shares, the member project accepts or rejects. */
export function imageMembers(ctx: ImageContext) {
  const { members, now } = ctx;

  async function sharedImage(id: string, caller: Caller): Promise<ImageRecord> {
    const image = await ctx.visibleImage(id, caller);
    if (image.visibility !== "shared")
      throw new ForbiddenError("Only shared images have members.", "NOT_SHARED");
    return image;
  }

  /** A membership the caller may see (its own, or any for the owner), else 404. */
  async function visibleMember(image: ImageRecord, memberId: string, caller: Caller): Promise<ImageMember> {
    const member = await members.get(image.id, memberId);
    if (!member || (!canSeeAllMembers(image, caller) && memberId !== caller.projectId)) {
      throw memberNotFound(image.id, memberId);
    }
    return member;
  }

  return {
    /** Shares a `shared` image with another project; the membership starts `pending`. Owner (or admin) only. */
    async addMember(id: string, memberId: string, caller: Caller): Promise<ImageMember> {
      const image = await sharedImage(id, caller);
      if (!canManageMembers(image, caller)) {
        throw new ForbiddenError(`You are not permitted to create image members for the image '${id}'.`);
      }
      if (memberId.length === 0 || memberId.length > MAX_NAME) {
        throw new InvalidRequestError(`A member is a project id of 1 to ${MAX_NAME} characters.`);
      }
      if ((await members.get(id, memberId)) !== undefined) {
        throw new ConflictError(
          `Member ${memberId} already associated with image ${id}.`,
          "DUPLICATE_MEMBER",
        );
      }
      if ((await members.listByImage(id)).length >= MAX_MEMBERS_PER_IMAGE) {
        throw new LimitExceededError(`An image may have at most ${MAX_MEMBERS_PER_IMAGE} members.`);
      }
      const at = now();
      const member: ImageMember = {
        image_id: id,
        member_id: memberId,
        status: "pending",
        created_at: at,
        updated_at: at,
      };
      await members.add(member, image);
      ctx.deps.log.info("image member added", { imageId: id, member: memberId });
      return member;
    },

    /** The owner (and admins) see every member; a member sees only its own membership. */
    async listMembers(id: string, caller: Caller): Promise<ImageMember[]> {
      const image = await sharedImage(id, caller);
      if (canSeeAllMembers(image, caller)) return members.listByImage(id);
      const own = await members.get(id, caller.projectId);
      return own ? [own] : [];
    },

    async getMember(id: string, memberId: string, caller: Caller): Promise<ImageMember> {
      const image = await sharedImage(id, caller);
      if (!canSeeAllMembers(image, caller) && memberId !== caller.projectId)
        throw memberNotFound(id, memberId);
      const member = await members.get(id, memberId);
      if (!member) throw memberNotFound(id, memberId);
      return member;
    },

    /** Accepts, rejects or re-pends a share: only the member project itself decides (not the owner). */
    async setMemberStatus(
      id: string,
      memberId: string,
      status: MemberStatus,
      caller: Caller,
    ): Promise<ImageMember> {
      await visibleMember(await sharedImage(id, caller), memberId, caller);
      if (memberId !== caller.projectId || !canWrite(caller)) {
        throw new ForbiddenError("You are not permitted to modify 'status' on this image member.");
      }
      return members.setStatus(id, memberId, status, now());
    },

    /** Stops sharing with a project. Owner (or admin) only. */
    async removeMember(id: string, memberId: string, caller: Caller): Promise<void> {
      const image = await sharedImage(id, caller);
      await visibleMember(image, memberId, caller);
      if (!canManageMembers(image, caller)) {
        throw new ForbiddenError(`You are not permitted to delete image members for the image '${id}'.`);
      }
      await members.remove(id, memberId);
    },
  };
}
