import type { ImageRecord } from "./image.ts";

/** Who is calling, from the verified token's claims. */
export interface Caller {
  userId: string;
  projectId: string;
  roles: readonly string[];
}

export const isAdmin = (c: Caller): boolean => c.roles.includes("admin");
/** Readers may look but not change (Glance's secure-RBAC `reader` role). */
export const canWrite = (c: Caller): boolean => isAdmin(c) || c.roles.includes("member");

export type MemberStatus = "pending" | "accepted" | "rejected";

/**
 * Glance's default visibility rules: may the caller see this image at all? `memberStatus` is the caller's
 * membership of a shared image, if any. Members see a shared image whatever their status; only accepted
 * ones see it in their default list.
 */
export function canSee(image: ImageRecord, caller: Caller, memberStatus?: MemberStatus): boolean {
  if (image.status === "deleted") return false;
  if (isAdmin(caller) || image.owner === caller.projectId) return true;
  switch (image.visibility) {
    case "public":
    case "community":
      return true;
    case "shared":
      return memberStatus !== undefined;
    case "private":
      return false;
  }
}

/** May the caller change the image record or upload its bytes? Owner members and admins only. */
export function canModify(image: ImageRecord, caller: Caller): boolean {
  return isAdmin(caller) || (image.owner === caller.projectId && canWrite(caller));
}

/**
 * Deactivate and reactivate: admins, and the owner's members. Glance Zed's legacy policy lets the owner
 * (role member) do it, and glanceclient users expect that; Hangar follows it (docs/api.md).
 */
export const canDeactivate = canModify;

/** Only the owner's members (or an admin) add and remove the projects a shared image is shared with. */
export const canManageMembers = canModify;

/**
 * Glance's list rules: may the image appear in the caller's list? Own and public images do; community
 * ones only when the list asks for them; shared ones once the caller's membership has the status asked for
 * (`accepted` unless the list says otherwise). Admins list everything.
 */
export function listable(
  image: ImageRecord,
  caller: Caller,
  memberStatus: MemberStatus | undefined,
  want: { memberStatus: MemberStatus | "all"; community: boolean },
): boolean {
  if (image.status === "deleted") return false;
  if (isAdmin(caller) || image.owner === caller.projectId) return true;
  switch (image.visibility) {
    case "public":
      return true;
    case "community":
      return want.community;
    case "shared":
      return (
        memberStatus !== undefined && (want.memberStatus === "all" || memberStatus === want.memberStatus)
      );
    case "private":
      return false;
  }
}
