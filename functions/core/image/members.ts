import type { MemberStatus } from "./access.ts";

export const MEMBER_STATUSES = ["pending", "accepted", "rejected"] as const satisfies readonly MemberStatus[];

/** A project an image is shared with, and whether that project accepted the share (Glance's image member). */
export interface ImageMember {
  image_id: string;
  member_id: string;
  status: MemberStatus;
  created_at: string;
  updated_at: string;
}

/** Glance's default `image_member_quota`: more members than this on one image is refused. */
export const MAX_MEMBERS_PER_IMAGE = 128;
