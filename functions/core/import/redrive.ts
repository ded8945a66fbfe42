import { imageIdFromStagingKey, STAGING_PREFIX } from "../image/image.ts";
import type { Clock, ImageRepository, ImportTrigger, Logger } from "../ports.ts";
import type { ListedObject } from "../uploads/ports.ts";

export interface RedriveDeps {
  images: Pick<ImageRepository, "get">;
  /** Lists the objects under a prefix (the staged uploads). */
  listObjects(prefix: string): Promise<ListedObject[]>;
  trigger: ImportTrigger;
  clock: Clock;
  log: Logger;
  /**
   * How long an upload may sit staged beside a `queued` image before its storage event counts as lost
   * (or its retries spent): long enough for a delivery that is merely slow.
   */
  queuedAfterSeconds: number;
}

export interface RedriveReport {
  /** Staged uploads handed to the importer again, by image id. */
  redriven: string[];
}

/**
 * Hands the importer every staged upload whose import nobody is running: its image is `importing` under
 * an expired lease (the importer died and its retries are spent) or has sat `queued` beside its bytes
 * (the storage event was lost). The importer takes each over as for a redelivered event, so running this
 * beside live imports, or twice, is harmless. Memory: one listing entry per staged upload.
 */
export async function redriveStaleImports(deps: RedriveDeps): Promise<RedriveReport> {
  const report: RedriveReport = { redriven: [] };
  const nowMs = deps.clock.now().getTime();
  for (const object of await deps.listObjects(STAGING_PREFIX)) {
    const id = imageIdFromStagingKey(object.key);
    if (!id) continue;
    const image = await deps.images.get(id);
    if (!image) continue;
    const leaseEnd = image.import_lease_until ? Date.parse(image.import_lease_until) : 0;
    const stagedAt = object.lastModified ? Date.parse(object.lastModified) : nowMs;
    const stale =
      (image.status === "importing" && leaseEnd < nowMs) ||
      (image.status === "queued" && stagedAt + deps.queuedAfterSeconds * 1000 <= nowMs);
    if (!stale) continue;
    await deps.trigger.importStaged(object.key);
    report.redriven.push(id);
    deps.log.info("import redriven", {
      imageId: id,
      status: image.status,
      leaseUntil: image.import_lease_until,
    });
  }
  return report;
}
