import type { Logger } from "../ports.ts";
import type { Importer, ImportOutcome } from "./import-uploaded-image.ts";

/** One object named by a storage notification, its key already decoded. */
export interface StorageObjectEvent {
  bucket: string;
  key: string;
  /** The version the event is about, when storage keeps versions. */
  versionId?: string | undefined;
}

/** Some objects of one notification could not be imported for a reason that may pass: retry the event. */
export class ImportRetryError extends AggregateError {
  override name = "ImportRetryError";
}

/**
 * Imports every object a storage notification names (objects of other buckets are ignored). Every object
 * is tried; when any failed transiently the whole notification is thrown back as `ImportRetryError`, so
 * the platform retries it. Objects already imported are then ignored, so a retry never imports twice.
 */
export async function importStorageEvents(
  deps: { importer: Importer; bucket: string; log: Logger },
  events: readonly StorageObjectEvent[],
): Promise<ImportOutcome[]> {
  const outcomes: ImportOutcome[] = [];
  const failures: unknown[] = [];
  for (const event of events) {
    if (event.bucket !== deps.bucket) {
      outcomes.push({ outcome: "ignored", why: `event for another bucket: ${event.bucket}` });
      continue;
    }
    try {
      const outcome = await deps.importer.importStagedObject(event.key, event.versionId);
      if (outcome.outcome === "ignored") deps.log.info("event ignored", { key: event.key, why: outcome.why });
      outcomes.push(outcome);
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1)
    throw new ImportRetryError(failures, `${failures.length} of ${events.length} imports failed`);
  return outcomes;
}
