import {
  ConflictError,
  ForbiddenError,
  ImageNotFoundError,
  NotFoundError,
  StaleStatusError,
} from "../errors.ts";
import { type Caller, canModify, canSee, isAdmin, type MemberStatus } from "../image/access.ts";
import { IMAGE_STATUSES, type ImageRecord, type ImageStatus, stagingKey } from "../image/image.ts";
import type {
  Clock,
  ImageRepository,
  Logger,
  MemberRepository,
  ObjectStore,
  WebDownloadDispatcher,
} from "../ports.ts";
import type { MultipartUploadService, UploadLink } from "../uploads/multipart.ts";
import type { Resolver } from "../web-download.ts";

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

/** Statuses of an image that still exists. */
export const LIVE: readonly ImageStatus[] = IMAGE_STATUSES.filter((s) => s !== "deleted");

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

/** A lost conditional write surfaces as a conflict the client can retry. */
export function asConflict(err: unknown, id: string): never {
  if (err instanceof StaleStatusError) {
    throw new ConflictError(`Image ${id} changed status meanwhile; retry.`, "STALE_STATUS", { cause: err });
  }
  throw err;
}

/** A change computed from a record: what to write, in which statuses, guarded by which fields' values. */
export interface ModifyStep {
  changes: Partial<ImageRecord>;
  whileIn: readonly ImageStatus[];
  /** Fields the change rewrites whole from what it read: the write holds only if they are unchanged. */
  guard: (keyof ImageRecord)[];
}

/** What every concern of the image service shares: its dependencies and the visibility rules. */
export type ImageContext = ReturnType<typeof createImageContext>;

export function createImageContext(deps: ImageServiceDeps) {
  const { images, objects, clock } = deps;
  const members = deps.members ?? NO_MEMBERS;
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
    plan: (image: ImageRecord) => ModifyStep | undefined,
  ): Promise<ImageRecord> {
    for (let attempt = 1; ; attempt++) {
      const image = await modifiableImage(id, caller, "modify_image");
      const step = plan(image);
      if (!step) return image;
      const unchanged = Object.fromEntries(step.guard.map((k) => [k, image[k]])) as Partial<ImageRecord>;
      try {
        return await images.update(id, step.changes, step.whileIn, { unchanged, from: image });
      } catch (err) {
        // Either the status moved on (a conflict for the client) or a guarded field changed (go again).
        const status = err instanceof StaleStatusError ? err.current?.status : undefined;
        if (!status || !step.whileIn.includes(status) || attempt >= MAX_MODIFY_ATTEMPTS) asConflict(err, id);
        // A little random wait, growing, so that writers racing for the same record spread out.
        await new Promise((r) => setTimeout(r, Math.random() * 10 * Math.min(attempt, 8)));
      }
    }
  }

  return {
    deps,
    images,
    objects,
    clock,
    members,
    maxUploadSize: deps.maxUploadSize ?? 5 * 1024 ** 3,
    now,
    uploadLink,
    membershipOf,
    visibleImage,
    modifiableImage,
    modify,
  };
}
