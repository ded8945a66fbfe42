import {
  ConflictError,
  ForbiddenError,
  ImageNotFoundError,
  InvalidRequestError,
  LimitExceededError,
  NotFoundError,
  StaleStatusError,
  UriNotAllowedError,
} from "./errors.ts";
import {
  type Caller,
  canDeactivate,
  canManageMembers,
  canModify,
  canSee,
  canWrite,
  isAdmin,
  listable,
  type MemberStatus,
} from "./image/access.ts";
import { creatorOf, type NewImage, newImageRecord } from "./image/create.ts";
import { MAX_NAME, MAX_TAGS } from "./image/fields.ts";
import {
  IMAGE_STATUSES,
  type ImageRecord,
  type ImageStatus,
  imageKey,
  isImageId,
  spoolKey,
  stagingKey,
  stagingPrefix,
} from "./image/image.ts";
import { type ImageMember, MAX_MEMBERS_PER_IMAGE } from "./image/members.ts";
import { applyImagePatch, type PatchOperation } from "./image/patch.ts";
import { abortLeftoverWrites } from "./leftovers.ts";
import { type ListQuery, paginate } from "./list-query.ts";
import type {
  Clock,
  ImageRepository,
  Logger,
  MemberRepository,
  ObjectStore,
  PresignedRequest,
  WebDownloadDispatcher,
} from "./ports.ts";
import type { MultipartUploadService, UploadLink } from "./uploads/multipart.ts";
import { checkTarget, type Resolver } from "./web-download.ts";

export interface ImageServiceDeps {
  images: ImageRepository;
  objects: ObjectStore;
  clock: Clock;
  log: Logger;
  newId: () => string;
  uploadUrlTtlSeconds: number;
  downloadUrlTtlSeconds: number;
  /** Image members; without it no image can be shared with another project. */
  members?: MemberRepository | undefined;
  /** Largest `upload_size` a client may declare (PATCH validates it too); default 5 GiB. */
  maxUploadSize?: number | undefined;
  /** The web-download import method; without it `import` is refused. */
  webDownload?:
    | {
        dispatcher: WebDownloadDispatcher;
        resolve: Resolver;
        allowLoopback: boolean;
        /** How long a fetch may hold the image (its whole time limit, with a margin). */
        leaseSeconds: number;
      }
    | undefined;
  /** Large declared uploads get a multipart plan instead of a single PUT; without it, always a single PUT. */
  multipart?: MultipartUploadService;
}

/** An image as a caller sees it, with the link to upload to when the caller may use one. */
export interface ImageView {
  image: ImageRecord;
  upload: UploadLink | undefined;
}

const LIVE: readonly ImageStatus[] = IMAGE_STATUSES.filter((s) => s !== "deleted");

/** Stands in when no member repository is wired: nothing is shared, sharing is refused. */
const NO_MEMBERS: MemberRepository = {
  add: async () => {
    throw new ForbiddenError("Image sharing is not enabled.");
  },
  get: async () => undefined,
  listByImage: async () => [],
  listByMember: async () => [],
  setStatus: async (imageId, memberId) => {
    throw new NotFoundError(`Member ${memberId} of image ${imageId} not found.`, "MEMBER_NOT_FOUND");
  },
  remove: async (imageId, memberId) => {
    throw new NotFoundError(`Member ${memberId} of image ${imageId} not found.`, "MEMBER_NOT_FOUND");
  },
  removeAll: async () => {},
};

/** Times a read-modify-write is computed again after a concurrent change before it gives up (409). */
const MAX_MODIFY_ATTEMPTS = 16;
/** Fields a patch rewrites whole from what it read: its write holds only if they are unchanged. */
const WHOLE_FIELDS: (keyof ImageRecord)[] = ["tags", "properties"];

/** A lost conditional write surfaces as a conflict the client can retry. */
function asConflict(err: unknown, id: string): never {
  if (err instanceof StaleStatusError) {
    throw new ConflictError(`Image ${id} changed status meanwhile; retry.`, "STALE_STATUS", { cause: err });
  }
  throw err;
}

export function createImageService(deps: ImageServiceDeps) {
  const { images, objects, clock } = deps;
  const members = deps.members ?? NO_MEMBERS;
  const maxUploadSize = deps.maxUploadSize ?? 5 * 1024 ** 3;
  const now = () => clock.now().toISOString();

  async function uploadLink(image: ImageRecord, caller: Caller): Promise<UploadLink | undefined> {
    if (image.status !== "queued" || !canModify(image, caller)) return undefined;
    const plan = deps.multipart?.plan(image);
    if (plan) return plan;
    return objects.presignPut(stagingKey(image.id), {
      expiresInSeconds: deps.uploadUrlTtlSeconds,
      ...(image.upload_size !== null ? { contentLength: image.upload_size } : {}),
    });
  }

  /** The caller's membership of an image, when it matters for visibility. */
  async function membershipOf(image: ImageRecord, caller: Caller): Promise<MemberStatus | undefined> {
    if (image.visibility !== "shared" || isAdmin(caller) || image.owner === caller.projectId)
      return undefined;
    return (await members.get(image.id, caller.projectId))?.status;
  }

  /** Loads an image the caller may see, or throws the same not-found Glance gives for hidden ones. */
  async function visibleImage(id: string, caller: Caller): Promise<ImageRecord> {
    const image = await images.get(id);
    if (!image || !canSee(image, caller, await membershipOf(image, caller))) throw new ImageNotFoundError(id);
    return image;
  }

  /** A visible image the caller may change, else 403 naming Glance's policy action. */
  async function modifiableImage(id: string, caller: Caller, action: string): Promise<ImageRecord> {
    const image = await visibleImage(id, caller);
    if (!canModify(image, caller)) {
      throw new ForbiddenError(`You are not authorized to complete ${action} action.`);
    }
    return image;
  }

  /**
   * Read, change, write back, for changes computed from the record (a patch, a tag list). The write is
   * conditioned on the fields the change rewrites whole (`guard`) being as read, so a concurrent change
   * is never undone: when one lands in between, the change is computed again from the new record.
   * `plan` returns undefined when there is nothing to write.
   */
  async function modify(
    id: string,
    caller: Caller,
    plan: (
      image: ImageRecord,
    ) =>
      | { changes: Partial<ImageRecord>; whileIn: readonly ImageStatus[]; guard: (keyof ImageRecord)[] }
      | undefined,
  ): Promise<ImageRecord> {
    for (let attempt = 1; ; attempt++) {
      const image = await modifiableImage(id, caller, "modify_image");
      const step = plan(image);
      if (!step) return image;
      const unchanged = Object.fromEntries(step.guard.map((k) => [k, image[k]])) as Partial<ImageRecord>;
      try {
        return await images.update(id, step.changes, step.whileIn, { unchanged });
      } catch (err) {
        // Either the status moved on (a conflict for the client) or a guarded field changed (go again).
        const fresh = err instanceof StaleStatusError ? await images.get(id) : undefined;
        if (!fresh || !step.whileIn.includes(fresh.status) || attempt >= MAX_MODIFY_ATTEMPTS) {
          asConflict(err, id);
        }
        // A little random wait, growing, so that writers racing for the same record spread out.
        await new Promise((r) => setTimeout(r, Math.random() * 10 * Math.min(attempt, 8)));
      }
    }
  }

  async function sharedImage(id: string, caller: Caller): Promise<ImageRecord> {
    const image = await visibleImage(id, caller);
    if (image.visibility !== "shared")
      throw new ForbiddenError("Only shared images have members.", "NOT_SHARED");
    return image;
  }

  const memberNotFound = (id: string, memberId: string) =>
    new NotFoundError(`Member ${memberId} of image ${id} not found.`, "MEMBER_NOT_FOUND");

  return {
    /** Creates the record in `queued` and returns it with its upload link. */
    async create(input: NewImage, caller: Caller): Promise<ImageView> {
      // A reader (or a token with no role) reads, never writes: not even a record that would hold quota.
      if (!canWrite(caller)) throw new ForbiddenError("You are not authorized to complete add_image action.");
      const creator = creatorOf(input, caller);
      const image = newImageRecord(input, creator, { newId: deps.newId, now: now(), maxUploadSize });
      // A large upload's storage multipart upload starts with the image; its id stays on the record.
      if (deps.multipart) Object.assign(image, await deps.multipart.prepare(image));
      await images.create(image);
      deps.log.info("image created", { imageId: image.id, owner: image.owner });
      return { image, upload: await uploadLink(image, creator) };
    },

    async show(id: string, caller: Caller): Promise<ImageView> {
      const image = await visibleImage(id, caller);
      return { image, upload: await uploadLink(image, caller) };
    },

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
        if (!m || !canSee(m, caller, await membershipOf(m, caller))) {
          throw new InvalidRequestError(`The marker ${query.marker} could not be found.`, "BAD_MARKER");
        }
        marker = m;
      }
      const { page, more } = paginate([...byId.values()], query, marker);
      return { images: page, more };
    },

    /** Applies a Glance JSON patch (core and extra properties) with a conditional write. */
    async update(id: string, ops: readonly PatchOperation[], caller: Caller): Promise<ImageView> {
      let fields: string[] = [];
      const updated = await modify(id, caller, (image) => {
        const changes = applyImagePatch(image, ops, caller, { maxUploadSize, now: now() });
        if (
          changes.upload_size !== undefined &&
          changes.upload_size !== image.upload_size &&
          (image.multipart_upload_id || deps.multipart?.applies({ upload_size: changes.upload_size }))
        ) {
          // A multipart plan's part layout follows from the size; changing it would orphan uploaded parts.
          throw new ConflictError(
            `The upload_size of image ${id} cannot change: it is (or would be) uploaded in parts. Create a new image instead.`,
            "UPLOAD_SIZE_FIXED",
          );
        }
        fields = Object.keys(changes);
        // Fields that only a queued image may change are written only while it still is.
        const queuedOnly = ["disk_format", "container_format", "upload_size", "upload_sha256"].some(
          (k) => k in changes,
        );
        return { changes, whileIn: queuedOnly ? ["queued"] : LIVE, guard: WHOLE_FIELDS };
      });
      deps.log.info("image updated", { imageId: id, fields });
      return { image: updated, upload: await uploadLink(updated, caller) };
    },

    /** Adds a tag (idempotent). */
    async addTag(id: string, tag: string, caller: Caller): Promise<void> {
      await modify(id, caller, (image) => {
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
      await modify(id, caller, (image) => {
        if (!image.tags.includes(tag))
          throw new NotFoundError(`Tag ${tag} not found on image ${id}.`, "TAG_NOT_FOUND");
        const tags = image.tags.filter((t) => t !== tag);
        return { changes: { tags, updated_at: now() }, whileIn: LIVE, guard: ["tags"] };
      });
    },

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
      await members.add(member);
      deps.log.info("image member added", { imageId: id, member: memberId });
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
      const image = await sharedImage(id, caller);
      const member = await members.get(id, memberId);
      if (!member || (!canSeeAllMembers(image, caller) && memberId !== caller.projectId)) {
        throw memberNotFound(id, memberId);
      }
      if (memberId !== caller.projectId || !canWrite(caller)) {
        throw new ForbiddenError("You are not permitted to modify 'status' on this image member.");
      }
      return members.setStatus(id, memberId, status, now());
    },

    /** Stops sharing with a project. Owner (or admin) only. */
    async removeMember(id: string, memberId: string, caller: Caller): Promise<void> {
      const image = await sharedImage(id, caller);
      const member = await members.get(id, memberId);
      if (!member || (!canSeeAllMembers(image, caller) && memberId !== caller.projectId)) {
        throw memberNotFound(id, memberId);
      }
      if (!canManageMembers(image, caller)) {
        throw new ForbiddenError(`You are not permitted to delete image members for the image '${id}'.`);
      }
      await members.remove(id, memberId);
    },

    /** Stops downloads of an active image (admins and, as in Glance Zed's legacy policy, the owner). */
    async deactivate(id: string, caller: Caller): Promise<void> {
      const image = await visibleImage(id, caller);
      if (!canDeactivate(image, caller))
        throw new ForbiddenError("You are not authorized to complete deactivate action.");
      if (image.status === "deactivated") return;
      if (image.status !== "active") {
        throw new ForbiddenError(`Not allowed to deactivate image in status '${image.status}'`, "BAD_STATUS");
      }
      await images.transition(id, "deactivate", { updated_at: now() }).catch((e) => asConflict(e, id));
    },

    async reactivate(id: string, caller: Caller): Promise<void> {
      const image = await visibleImage(id, caller);
      if (!canDeactivate(image, caller))
        throw new ForbiddenError("You are not authorized to complete reactivate action.");
      if (image.status === "active") return;
      if (image.status !== "deactivated") {
        throw new ForbiddenError(`Not allowed to reactivate image in status '${image.status}'`, "BAD_STATUS");
      }
      await images.transition(id, "reactivate", { updated_at: now() }).catch((e) => asConflict(e, id));
    },

    /**
     * Starts a `web-download` import: the URL is checked now (scheme, public addresses) so a refusal is a
     * clear 400; the fetch itself runs in the background and re-checks every redirect.
     */
    async importFromWeb(id: string, uri: string, caller: Caller): Promise<void> {
      const image = await modifiableImage(id, caller, "import");
      if (!deps.webDownload)
        throw new ForbiddenError("The web-download import method is not enabled.", "METHOD_DISABLED");
      if (image.status !== "queued") {
        throw new ConflictError(
          `Image ${id} is ${image.status}; only a queued image can be imported.`,
          "NOT_QUEUED",
        );
      }
      let url: URL;
      try {
        url = new URL(uri);
      } catch (err) {
        throw new UriNotAllowedError(`The web-download URI is not a valid URL: ${uri.slice(0, 200)}`, {
          cause: err,
        });
      }
      await checkTarget(url, deps.webDownload.resolve, deps.webDownload);
      // One import at a time: the image leaves `queued` now, held by the fetch until it has staged the
      // bytes. A second request, or an upload through the link, finds it `importing` and is refused.
      const started = clock.now();
      const lease = new Date(started.getTime() + deps.webDownload.leaseSeconds * 1000).toISOString();
      await images
        .transition(id, "startImport", { updated_at: started.toISOString(), import_lease_until: lease })
        .catch((err: unknown) => {
          if (err instanceof StaleStatusError)
            throw new ConflictError(
              `Image ${id} is no longer queued; another import started.`,
              "NOT_QUEUED",
              {
                cause: err,
              },
            );
          throw err;
        });
      try {
        await deps.webDownload.dispatcher.dispatch({ imageId: id, uri: url.href, lease });
      } catch (err) {
        await images
          .transition(
            id,
            "releaseImport",
            { updated_at: now(), import_lease_until: null },
            { leaseIs: lease },
          )
          .catch((e: unknown) => deps.log.warn("could not release image", { imageId: id, error: String(e) }));
        throw err;
      }
      deps.log.info("web-download started", { imageId: id, host: url.host });
    },

    /**
     * Marks the image deleted (in any status, `importing` included), removes its objects, the uploads in
     * progress at its keys, its members, then the record. Protected images stay: protection is part of the
     * conditional write, so a protection set after our read still stops the delete.
     */
    async delete(id: string, caller: Caller): Promise<void> {
      const image = await visibleImage(id, caller);
      if (!canModify(image, caller)) {
        throw new ForbiddenError(`You are not permitted to delete the image '${id}'.`);
      }
      // Glance's words for a protected image; the reason tells it apart from a policy refusal.
      const isProtected = () =>
        new ForbiddenError(`You are not permitted to delete the image '${id}'.`, "PROTECTED");
      if (image.protected) throw isProtected();
      try {
        await images.transition(id, "delete", { updated_at: now() }, { unlessProtected: true });
      } catch (err) {
        if (!(err instanceof StaleStatusError)) throw err;
        const fresh = await images.get(id);
        if (!fresh || fresh.status === "deleted") throw new ImageNotFoundError(id);
        if (fresh.protected) throw isProtected();
        asConflict(err, id);
      }
      // Quota is released by the transition above, once. An import running now loses its next
      // conditional write and removes its own output; what it is writing right now is aborted here.
      await deps.multipart?.discard(image);
      await objects.deletePrefix(stagingPrefix(id));
      await abortLeftoverWrites(objects, id);
      await objects.delete(imageKey(id));
      await objects.delete(spoolKey(id));
      await members.removeAll(id);
      await images.purge(id);
      deps.log.info("image deleted", { imageId: id, was: image.status });
    },

    /** A presigned GET of the stored bytes, refused while the image has none. */
    async downloadLink(id: string, caller: Caller): Promise<PresignedRequest> {
      const image = await visibleImage(id, caller);
      if (image.status === "deactivated" && !isAdmin(caller)) {
        throw new ForbiddenError(
          "The requested image has been deactivated. Image data download is forbidden.",
          "DEACTIVATED",
        );
      }
      if (image.status !== "active" && image.status !== "deactivated") {
        throw new ConflictError(`Image ${id} has no data: its status is ${image.status}.`, "NO_DATA");
      }
      return objects.presignGet(imageKey(id), { expiresInSeconds: deps.downloadUrlTtlSeconds });
    },
  };
}

/** Owners and admins see every member of an image; members only themselves. */
function canSeeAllMembers(image: ImageRecord, caller: Caller): boolean {
  return isAdmin(caller) || image.owner === caller.projectId;
}

export type ImageService = ReturnType<typeof createImageService>;
