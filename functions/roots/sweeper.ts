import { S3MultipartUploads } from "../adapters/s3/multipart.ts";
import type { SweeperConfig } from "../config.ts";
import type { Logger } from "../core/ports.ts";
import { createSweeper } from "../core/sweep.ts";
import { createStore } from "./store.ts";

/** The sweeper function's composition root: abandoned uploads, stale staged objects, stalled imports. */
export function createSweeperFunction(config: SweeperConfig, options: { log?: Logger } = {}) {
  const store = createStore(config, options);
  return createSweeper({
    images: store.images,
    objects: store.objects,
    uploads: new S3MultipartUploads({
      bucket: config.bucket,
      region: config.region,
      endpoint: config.s3Endpoint,
      publicEndpoint: config.s3PublicEndpoint,
    }),
    clock: store.clock,
    log: store.log,
    abandonAfterSeconds: config.abandonUploadsAfterSeconds,
    stalledImportGraceSeconds: config.stalledImportGraceSeconds,
  });
}
