import {
  ConflictError,
  ForbiddenError,
  ImageNotFoundError,
  InvalidRequestError,
  StaleStatusError,
} from "../errors.ts";
import { type Caller, canModify, canSee } from "../image/access.ts";
import { type ImageRecord, type ImageStatus, stagingKey } from "../image/image.ts";
import type { Clock, ImageRepository, Logger, ObjectStore, PresignedRequest } from "../ports.ts";
import { describeParts, layoutFor, type PartLayout, partLength, usesMultipart } from "./plan.ts";
import type { MultipartUploads, StoredPart } from "./ports.ts";

/** The `upload` object of a large image: a plan the client follows instead of a single PUT. */
export interface MultipartPlan {
  method: "multipart";
  partSize: number;
  partCount: number;
  /** The storage upload is kept at least until then; the sweeper measures abandonment from the last part. */
  expiresAt: string;
  partsUrl: string;
  completeUrl: string;
  cancelUrl: string;
}

/** Either link an image response may carry. */
export type UploadLink = PresignedRequest | MultipartPlan;

export interface MultipartDeps {
  images: ImageRepository;
  objects: ObjectStore;
  uploads: MultipartUploads;
  clock: Clock;
  log: Logger;
  /** Declared sizes above this get a multipart plan (always above 5 GiB). */
  threshold: number;
  /** Smallest part size offered (5 MiB–5 GiB); parts grow for large uploads to stay within 10,000. */
  minPartSize: number;
  /** Lifetime of presigned part links: short, since a client can always ask again. */
  partUrlTtlSeconds: number;
  /** Inactivity after which the sweeper aborts an upload; also the plan's advertised lifetime. */
  abandonAfterSeconds: number;
}

export interface SignedPart extends PresignedRequest {
  partNumber: number;
  size: number;
}

/** Parts a client may ask to sign in one request; presigning is local, the bound keeps responses small. */
export const MAX_PARTS_PER_REQUEST = 1000;

const ANY_STATUS: readonly ImageStatus[] = ["queued", "importing", "active", "killed", "deactivated"];

/**
 * Large uploads that survive a crash: the storage multipart upload is started with the image, the client
 * asks for presigned part links (any subset, as often as it needs — that is how it resumes), lists what
 * storage already holds, and completes or cancels. Only the owner's members and admins, only while `queued`.
 */
export function createMultipartUploads(deps: MultipartDeps) {
  const { images, uploads, clock, log } = deps;

  const layoutOf = (image: ImageRecord): PartLayout | undefined =>
    image.upload_size !== null && usesMultipart(image.upload_size, deps.threshold)
      ? layoutFor(image.upload_size, deps.minPartSize)
      : undefined;

  /** The image, if the caller may see it and upload to it while it is queued; Glance's errors otherwise. */
  async function uploadable(id: string, caller: Caller): Promise<{ image: ImageRecord; layout: PartLayout }> {
    const image = await images.get(id);
    if (!image || !canSee(image, caller)) throw new ImageNotFoundError(id);
    if (!canModify(image, caller)) {
      throw new ForbiddenError(`You are not permitted to upload data to the image '${id}'.`);
    }
    if (image.status !== "queued") {
      throw new ConflictError(
        `Image ${id} takes no upload: its status is ${image.status}, not queued.`,
        "NOT_QUEUED",
      );
    }
    const layout = layoutOf(image);
    if (!layout) {
      throw new ConflictError(
        `Image ${id} has no multipart plan: its upload is a single PUT to the link in its 'upload' field.`,
        "NOT_MULTIPART",
      );
    }
    return { image, layout };
  }

  /** Starts a storage upload and records it, unless one is recorded already; returns the recorded id. */
  async function ensureUpload(image: ImageRecord): Promise<string> {
    if (image.multipart_upload_id) return image.multipart_upload_id;
    const key = stagingKey(image.id);
    if (await deps.objects.head(key)) {
      throw new ConflictError(
        `The upload of image ${image.id} is complete and waits for its import.`,
        "UPLOAD_COMPLETE",
      );
    }
    const uploadId = await uploads.create(key);
    try {
      await images.update(
        image.id,
        { multipart_upload_id: uploadId, multipart_started_at: clock.now().toISOString() },
        ["queued"],
      );
    } catch (err) {
      await uploads.abort(key, uploadId);
      if (err instanceof StaleStatusError) {
        throw new ConflictError(`Image ${image.id} stopped waiting for an upload.`, "NOT_QUEUED", {
          cause: err,
        });
      }
      throw err;
    }
    // The repository cannot condition on this field, so two callers restarting the same upload at once may
    // both write; the last writer wins and a loser that sees it gives up its own upload. (A loser that read
    // before the winner wrote keeps an orphan the sweeper removes; its client finds the parts missing.)
    const current = await images.get(image.id);
    if (current?.multipart_upload_id && current.multipart_upload_id !== uploadId) {
      await uploads.abort(key, uploadId);
      return current.multipart_upload_id;
    }
    return uploadId;
  }

  /** Storage's parts, or none when the recorded upload is gone (aborted by an operator or a lifecycle rule). */
  async function storedParts(image: ImageRecord): Promise<StoredPart[]> {
    if (!image.multipart_upload_id) return [];
    return (await uploads.listParts(stagingKey(image.id), image.multipart_upload_id)) ?? [];
  }

  return {
    /** True when an image of this declared size is uploaded in parts. */
    applies(image: Pick<ImageRecord, "upload_size">): boolean {
      return image.upload_size !== null && usesMultipart(image.upload_size, deps.threshold);
    },

    /** Record fields for a new image: the storage upload is started with the image, for large ones. */
    async prepare(image: ImageRecord): Promise<Partial<ImageRecord>> {
      if (!layoutOf(image)) return {};
      const uploadId = await uploads.create(stagingKey(image.id));
      return { multipart_upload_id: uploadId, multipart_started_at: clock.now().toISOString() };
    },

    /**
     * Aborts the image's storage upload when it goes away; listing uploads by prefix does not find it on
     * every store (MinIO answers only for an exact key), so the recorded id is the way to reach it.
     */
    async discard(image: ImageRecord): Promise<void> {
      if (image.multipart_upload_id) {
        await uploads.abort(stagingKey(image.id), image.multipart_upload_id).catch(() => undefined);
      }
    },

    /** The plan shown in `upload` for a large image (the caller's right to see it is checked by the caller). */
    plan(image: ImageRecord): MultipartPlan | undefined {
      const layout = layoutOf(image);
      if (!layout) return undefined;
      const base = `/v2/images/${image.id}/upload`;
      const started = new Date(image.multipart_started_at ?? clock.now().toISOString()).getTime();
      return {
        method: "multipart",
        partSize: layout.partSize,
        partCount: layout.partCount,
        expiresAt: new Date(started + deps.abandonAfterSeconds * 1000).toISOString(),
        partsUrl: `${base}/parts`,
        completeUrl: `${base}/complete`,
        cancelUrl: `${base}/cancel`,
      };
    },

    /** Presigned links for the given parts, each signed with its exact length. */
    async signParts(id: string, caller: Caller, partNumbers: readonly number[]): Promise<SignedPart[]> {
      const { image, layout } = await uploadable(id, caller);
      const size = image.upload_size as number;
      if (partNumbers.length === 0) throw new InvalidRequestError("Name at least one part to sign.");
      if (partNumbers.length > MAX_PARTS_PER_REQUEST) {
        throw new InvalidRequestError(`Sign at most ${MAX_PARTS_PER_REQUEST} parts per request.`);
      }
      const outside = partNumbers.filter((n) => !Number.isInteger(n) || n < 1 || n > layout.partCount);
      if (outside.length > 0) {
        throw new InvalidRequestError(
          `Part numbers must be 1..${layout.partCount}; got ${outside.slice(0, 10).join(", ")}.`,
          "INVALID_PART_NUMBER",
        );
      }
      const uploadId = await ensureUpload(image);
      const key = stagingKey(id);
      return Promise.all(
        [...new Set(partNumbers)].map(async (partNumber) => {
          const length = partLength(size, layout.partSize, partNumber);
          const link = await uploads.presignPart(key, uploadId, partNumber, {
            expiresInSeconds: deps.partUrlTtlSeconds,
            contentLength: length,
          });
          return { ...link, partNumber, size: length };
        }),
      );
    },

    /** The parts storage holds so far, so a client can upload only the missing ones. */
    async listParts(id: string, caller: Caller): Promise<{ layout: PartLayout; parts: StoredPart[] }> {
      const { image, layout } = await uploadable(id, caller);
      return { layout, parts: await storedParts(image) };
    },

    /**
     * Checks that storage holds every part with its planned size, records a digest declared now, and
     * completes the upload; the importer takes over on the object's arrival.
     */
    async complete(id: string, caller: Caller, body: { upload_sha256?: string | undefined }): Promise<void> {
      const { image, layout } = await uploadable(id, caller);
      const size = image.upload_size as number;
      if (!image.multipart_upload_id) {
        throw new ConflictError(
          `Image ${id} has no upload in progress: ask for part links at its parts_url and upload all ${layout.partCount} parts.`,
          "MISSING_PARTS",
        );
      }
      const parts = await storedParts(image);
      const byNumber = new Map(parts.map((p) => [p.partNumber, p]));
      const missing: number[] = [];
      for (let n = 1; n <= layout.partCount; n++) if (!byNumber.has(n)) missing.push(n);
      if (missing.length > 0) {
        throw new ConflictError(
          `The upload of image ${id} lacks ${missing.length} of ${layout.partCount} parts: ${describeParts(missing)}.`,
          "MISSING_PARTS",
        );
      }
      const wrong = parts.filter(
        (p) => p.partNumber > layout.partCount || p.size !== partLength(size, layout.partSize, p.partNumber),
      );
      if (wrong.length > 0) {
        const detail = wrong
          .slice(0, 10)
          .map((p) =>
            p.partNumber > layout.partCount
              ? `part ${p.partNumber} is not in the plan`
              : `part ${p.partNumber} has ${p.size} bytes, not ${partLength(size, layout.partSize, p.partNumber)}`,
          )
          .join("; ");
        throw new ConflictError(
          `The upload of image ${id} does not match its plan: ${detail}. Upload those parts again.`,
          "PART_SIZE_MISMATCH",
        );
      }
      const declared = body.upload_sha256?.toLowerCase();
      if (declared !== undefined) {
        if (image.upload_sha256 !== null && image.upload_sha256 !== declared) {
          throw new ConflictError(
            `Image ${id} already declares upload_sha256 ${image.upload_sha256}; the completion declared ${declared}.`,
            "DIGEST_CONFLICT",
          );
        }
        // Written before the object exists, so the importer that its arrival starts verifies it.
        await images.update(id, { upload_sha256: declared, updated_at: clock.now().toISOString() }, [
          "queued",
        ]);
      }
      const key = stagingKey(id);
      await uploads.complete(
        key,
        image.multipart_upload_id,
        parts.map((p) => ({ partNumber: p.partNumber, etag: p.etag })),
      );
      log.info("multipart upload completed", { imageId: id, parts: parts.length });
      // The importer may already have moved the image on; the id is stale whatever the status.
      await images
        .update(id, { multipart_upload_id: null }, ANY_STATUS)
        .catch((err: unknown) =>
          log.warn("could not clear the upload id", { imageId: id, error: String(err) }),
        );
    },

    /** Aborts the storage upload and starts a fresh one: the image stays `queued` with a new, empty plan. */
    async cancel(id: string, caller: Caller): Promise<void> {
      const { image } = await uploadable(id, caller);
      const key = stagingKey(id);
      if (image.multipart_upload_id) await uploads.abort(key, image.multipart_upload_id);
      const uploadId = await uploads.create(key);
      try {
        await images.update(
          id,
          { multipart_upload_id: uploadId, multipart_started_at: clock.now().toISOString() },
          ["queued"],
        );
      } catch (err) {
        await uploads.abort(key, uploadId);
        throw err;
      }
      log.info("multipart upload cancelled", { imageId: id });
    },
  };
}

export type MultipartUploadService = ReturnType<typeof createMultipartUploads>;
