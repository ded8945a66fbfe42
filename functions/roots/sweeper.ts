import { LambdaImportTrigger } from "../adapters/aws/import-trigger.ts";
import { S3MultipartUploads } from "../adapters/s3/multipart.ts";
import type { SweeperConfig } from "../config.ts";
import { type RedriveReport, redriveStaleImports } from "../core/import/redrive.ts";
import { createSweeper } from "../core/sweep.ts";
import { createStore, type RootOptions } from "./store.ts";

/**
 * The sweeper function's composition root: housekeeping (abandoned uploads, stale staged objects, stalled
 * imports) on the hourly schedule, and the re-drive of stale imports every minute.
 */
export function createSweeperFunction(config: SweeperConfig, options: RootOptions = {}) {
  const store = createStore(config, options);
  const uploads = new S3MultipartUploads({
    bucket: config.bucket,
    region: config.region,
    endpoint: config.s3Endpoint,
    publicEndpoint: config.s3PublicEndpoint,
  });
  const sweeper = createSweeper({
    images: store.images,
    objects: store.objects,
    uploads,
    clock: store.clock,
    log: store.log,
    abandonAfterSeconds: config.abandonUploadsAfterSeconds,
    stalledImportGraceSeconds: config.stalledImportGraceSeconds,
  });
  const { importerFunction, lambdaEndpoint, queuedAfterSeconds } = config.redrive;
  const trigger = importerFunction
    ? new LambdaImportTrigger(importerFunction, config.bucket, config.region, lambdaEndpoint)
    : undefined;
  return {
    sweep: () => sweeper.sweep(),
    /** Hands the importer every staged upload nobody is importing (docs/reliability.md). */
    async redrive(): Promise<RedriveReport> {
      if (!trigger) {
        store.log.warn("re-drive skipped: HANGAR_IMPORTER_FUNCTION is not set");
        return { redriven: [] };
      }
      return redriveStaleImports({
        images: store.images,
        listObjects: (prefix) => uploads.listObjects(prefix),
        trigger,
        clock: store.clock,
        log: store.log,
        queuedAfterSeconds,
      });
    },
  };
}
