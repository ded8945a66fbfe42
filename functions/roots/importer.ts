import { parseStorageEvent } from "../adapters/s3/events.ts";
import type { ImporterConfig } from "../config.ts";
import { createImporter, type ImportOutcome } from "../core/import/import-uploaded-image.ts";
import { importStorageEvents } from "../core/import/storage-events.ts";
import type { Logger } from "../core/ports.ts";
import { createStore } from "./store.ts";

/** How long one importer holds an image before a redelivered event may take it over. */
const LEASE_SECONDS = 16 * 60;

/** The importer function's composition root: S3 notification → import of each staged object. */
export function createImporterFunction(config: ImporterConfig, options: { log?: Logger } = {}) {
  const store = createStore(config, options);
  const importer = createImporter({
    images: store.images,
    objects: store.objects,
    clock: store.clock,
    log: store.log,
    osHashAlgo: config.osHashAlgo,
    leaseSeconds: LEASE_SECONDS,
    policy: {
      preferredFormat: config.preferredFormat,
      acceptedFormats: config.acceptedFormats,
      maxVirtualSize: config.maxVirtualSize,
      maxGzipRatio: config.maxGzipRatio,
    },
    progressIntervalMs: 3000,
  });
  return {
    log: store.log,
    /** Imports every object an S3 (or MinIO) notification names; throws to have the event retried. */
    handle: (event: unknown): Promise<ImportOutcome[]> =>
      importStorageEvents({ importer, bucket: config.bucket, log: store.log }, parseStorageEvent(event)),
  };
}
