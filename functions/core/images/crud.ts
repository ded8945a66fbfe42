import { ConflictError, ForbiddenError, ImageNotFoundError, StaleStatusError } from "../errors.ts";
import { type Caller, canModify, canWrite, isAdmin } from "../image/access.ts";
import { creatorOf, type NewImage, newImageRecord } from "../image/create.ts";
import { type ImageRecord, imageKey, spoolKey, stagingPrefix, storedObject } from "../image/image.ts";
import { applyImagePatch, type PatchOperation } from "../image/patch.ts";
import { abortLeftoverWrites } from "../leftovers.ts";
import type { PresignedRequest } from "../ports.ts";
import type { UploadLink } from "../uploads/multipart.ts";
import { asConflict, type ImageContext, LIVE } from "./context.ts";

/** An image as a caller sees it, with the link to upload to when the caller may use one. */
export interface ImageView {
  image: ImageRecord;
  upload: UploadLink | undefined;
}

/** Fields a patch rewrites whole from what it read: its write holds only if they are unchanged. */
const WHOLE_FIELDS: (keyof ImageRecord)[] = ["tags", "properties"];
/** Fields only a queued image may change: a patch touching one is written only while it still is. */
const QUEUED_ONLY = ["disk_format", "container_format", "upload_size", "upload_sha256"];

/** Create, show, update, delete and download of image records. */
export function imageRecords(ctx: ImageContext) {
  const { deps, images, objects, members, maxUploadSize, now } = ctx;

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
      return { image, upload: await ctx.uploadLink(image, creator) };
    },

    async show(id: string, caller: Caller): Promise<ImageView> {
      const image = await ctx.visibleImage(id, caller);
      return { image, upload: await ctx.uploadLink(image, caller) };
    },

    /** Applies a Glance JSON patch (core and extra properties) with a conditional write. */
    async update(id: string, ops: readonly PatchOperation[], caller: Caller): Promise<ImageView> {
      let fields: string[] = [];
      const updated = await ctx.modify(id, caller, (image) => {
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
        const queuedOnly = QUEUED_ONLY.some((k) => k in changes);
        return { changes, whileIn: queuedOnly ? ["queued"] : LIVE, guard: WHOLE_FIELDS };
      });
      deps.log.info("image updated", { imageId: id, fields });
      return { image: updated, upload: await ctx.uploadLink(updated, caller) };
    },

    /**
     * Marks the image deleted (in any status, `importing` included), removes its objects, the uploads in
     * progress at its keys, its members, then the record. Protected images stay: protection is part of the
     * conditional write, so a protection set after our read still stops the delete.
     */
    async delete(id: string, caller: Caller): Promise<void> {
      const image = await ctx.visibleImage(id, caller);
      if (!canModify(image, caller)) {
        throw new ForbiddenError(`You are not permitted to delete the image '${id}'.`);
      }
      // Glance's words for a protected image; the reason tells it apart from a policy refusal.
      const isProtected = () =>
        new ForbiddenError(`You are not permitted to delete the image '${id}'.`, "PROTECTED");
      if (image.protected) throw isProtected();
      try {
        await images.transition(id, "delete", { updated_at: now() }, { unlessProtected: true, from: image });
      } catch (err) {
        if (!(err instanceof StaleStatusError)) throw err;
        const current = err.current;
        if (!current || current.status === "deleted") throw new ImageNotFoundError(id);
        if (current.protected) throw isProtected();
        asConflict(err, id);
      }
      // Quota is released by the transition above, once. An import running now loses its next
      // conditional write and removes its own output; what it is writing right now is aborted here.
      await deps.multipart?.discard(image);
      // Every version of each: the staged upload (for an image kept where it was uploaded, its data too,
      // `storedObject` is always under its staging prefix or at images/<id>), what an import wrote, its spool.
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
      const image = await ctx.visibleImage(id, caller);
      if (image.status === "deactivated" && !isAdmin(caller)) {
        throw new ForbiddenError(
          "The requested image has been deactivated. Image data download is forbidden.",
          "DEACTIVATED",
        );
      }
      if (image.status !== "active" && image.status !== "deactivated") {
        throw new ConflictError(`Image ${id} has no data: its status is ${image.status}.`, "NO_DATA");
      }
      // The version the import verified: a later PUT to the upload link cannot change what this serves.
      const { key, version_id } = storedObject(image);
      return objects.presignGet(key, {
        expiresInSeconds: deps.downloadUrlTtlSeconds,
        ...(version_id !== undefined ? { versionId: version_id } : {}),
      });
    },
  };
}
