import { ConflictError, ForbiddenError, ImageNotFoundError } from "./errors.ts";
import { type Caller, canModify, canSee, isAdmin } from "./image/access.ts";
import { type ImageRecord, imageKey, stagingKey, type Visibility } from "./image/image.ts";
import type { Clock, ImageRepository, Logger, ObjectStore, PresignedRequest } from "./ports.ts";
import type { MultipartUploadService, UploadLink } from "./uploads/multipart.ts";

export interface ImageServiceDeps {
  images: ImageRepository;
  objects: ObjectStore;
  clock: Clock;
  log: Logger;
  newId: () => string;
  uploadUrlTtlSeconds: number;
  downloadUrlTtlSeconds: number;
  /** Large declared uploads get a multipart plan instead of a single PUT; without it, always a single PUT. */
  multipart?: MultipartUploadService;
}

/** What a client may set when creating an image (already validated at the HTTP edge). */
export interface NewImage {
  id?: string | undefined;
  name?: string | null | undefined;
  visibility?: Visibility | undefined;
  protected?: boolean | undefined;
  os_hidden?: boolean | undefined;
  disk_format?: string | null | undefined;
  container_format?: string | null | undefined;
  min_disk?: number | undefined;
  min_ram?: number | undefined;
  tags?: string[] | undefined;
  properties?: Record<string, string> | undefined;
  upload_size?: number | undefined;
  upload_sha256?: string | undefined;
}

/** An image as a caller sees it, with the link to upload to when the caller may use one. */
export interface ImageView {
  image: ImageRecord;
  upload: UploadLink | undefined;
}

/** Glance refuses `public` to non-admins (policy `publicize_image`). */
function checkVisibilityAllowed(visibility: Visibility | undefined, caller: Caller): void {
  if (visibility === "public" && !isAdmin(caller)) {
    throw new ForbiddenError("You are not authorized to complete publicize_image action.");
  }
}

export function createImageService(deps: ImageServiceDeps) {
  const { images, objects, clock } = deps;

  async function uploadLink(image: ImageRecord, caller: Caller): Promise<UploadLink | undefined> {
    if (image.status !== "queued" || !canModify(image, caller)) return undefined;
    const plan = deps.multipart?.plan(image);
    if (plan) return plan;
    return objects.presignPut(stagingKey(image.id), {
      expiresInSeconds: deps.uploadUrlTtlSeconds,
      ...(image.upload_size !== null ? { contentLength: image.upload_size } : {}),
    });
  }

  /** Loads an image the caller may see, or throws the same not-found Glance gives for hidden ones. */
  async function visibleImage(id: string, caller: Caller): Promise<ImageRecord> {
    const image = await images.get(id);
    if (!image || !canSee(image, caller)) throw new ImageNotFoundError(id);
    return image;
  }

  return {
    /** Creates the record in `queued` and returns it with its upload link. */
    async create(input: NewImage, caller: Caller): Promise<ImageView> {
      checkVisibilityAllowed(input.visibility, caller);
      const now = clock.now().toISOString();
      const image: ImageRecord = {
        id: input.id ?? deps.newId(),
        name: input.name ?? null,
        status: "queued",
        visibility: input.visibility ?? "shared",
        protected: input.protected ?? false,
        os_hidden: input.os_hidden ?? false,
        owner: caller.projectId,
        disk_format: input.disk_format ?? null,
        container_format: input.container_format ?? null,
        size: null,
        virtual_size: null,
        checksum: null,
        os_hash_algo: null,
        os_hash_value: null,
        min_disk: input.min_disk ?? 0,
        min_ram: input.min_ram ?? 0,
        tags: [...new Set(input.tags ?? [])],
        created_at: now,
        updated_at: now,
        properties: input.properties ?? {},
        upload_size: input.upload_size ?? null,
        upload_sha256: input.upload_sha256?.toLowerCase() ?? null,
        source_format: null,
        converted: null,
        failure: null,
        import_progress: null,
        import_lease_until: null,
      };
      // A large upload's storage multipart upload starts with the image; its id stays on the record.
      if (deps.multipart) Object.assign(image, await deps.multipart.prepare(image));
      await images.create(image);
      deps.log.info("image created", { imageId: image.id, owner: image.owner });
      return { image, upload: await uploadLink(image, caller) };
    },

    async show(id: string, caller: Caller): Promise<ImageView> {
      const image = await visibleImage(id, caller);
      return { image, upload: await uploadLink(image, caller) };
    },

    /** Images the caller may see in a default Glance list: own, public, and shared ones. */
    async list(caller: Caller): Promise<ImageRecord[]> {
      const [own, pub] = await Promise.all([
        images.listByOwner(caller.projectId),
        images.listByVisibility("public"),
      ]);
      const byId = new Map<string, ImageRecord>();
      for (const image of [...own, ...pub]) {
        if (image.status !== "deleted" && (!image.os_hidden || image.owner === caller.projectId)) {
          byId.set(image.id, image);
        }
      }
      return [...byId.values()].sort((a, b) => b.created_at.localeCompare(a.created_at));
    },

    /** Marks the image deleted, removes its objects, then the record. Protected images stay. */
    async delete(id: string, caller: Caller): Promise<void> {
      const image = await visibleImage(id, caller);
      if (!canModify(image, caller)) {
        throw new ForbiddenError(`You are not permitted to delete the image '${id}'.`);
      }
      if (image.protected) {
        throw new ForbiddenError(`Image ${id} is protected and cannot be deleted.`, "PROTECTED");
      }
      await images.transition(id, "delete", { updated_at: clock.now().toISOString() });
      // An importer running now loses its final conditional write and removes its own output too.
      await objects.deletePrefix(`staging/${id}/`);
      await objects.delete(imageKey(id));
      await images.purge(id);
      deps.log.info("image deleted", { imageId: id });
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

export type ImageService = ReturnType<typeof createImageService>;
