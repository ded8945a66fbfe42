import { randomUUID } from "node:crypto";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import type { Hono } from "hono";
import { DynamoImageRepository } from "./adapters/dynamodb/image-repository.ts";
import { DynamoMemberRepository } from "./adapters/dynamodb/member-repository.ts";
import { DynamoQuotaStore } from "./adapters/dynamodb/quota-store.ts";
import {
  InProcessWebDownloads,
  LambdaWebDownloads,
  pinnedFetch,
  systemResolver,
} from "./adapters/http/web-download.ts";
import { createLogger } from "./adapters/log.ts";
import { parseStorageEvent } from "./adapters/s3/events.ts";
import { S3MultipartUploads } from "./adapters/s3/multipart.ts";
import { S3ObjectStore } from "./adapters/s3/object-store.ts";
import type { Config } from "./config.ts";
import { createImageService } from "./core/images.ts";
import { createImporter, type ImportOutcome } from "./core/import/import-uploaded-image.ts";
import type { Clock, Logger, WebDownloadJob } from "./core/ports.ts";
import { createQuotaService, type QuotaService } from "./core/quotas.ts";
import { createSweeper, type SweepReport } from "./core/sweep.ts";
import { createMultipartUploads } from "./core/uploads/multipart.ts";
import { MAX_OBJECT_SIZE } from "./core/uploads/plan.ts";
import { runWebDownload } from "./core/web-download.ts";
import { createApp } from "./http/app.ts";
import { createTokenVerifier } from "./http/auth.ts";

export interface Hangar {
  // biome-ignore lint/suspicious/noExplicitAny: the app's variable types are internal to the HTTP layer
  app: Hono<any>;
  /** Imports every object named by an S3 or MinIO notification envelope. */
  handleStorageEvent(body: unknown): Promise<ImportOutcome[]>;
  /** Housekeeping: abandoned uploads, stale staged objects, stalled imports (scheduled; `npm run sweep`). */
  sweep(): Promise<SweepReport>;
  /** Runs one web-download job to its end (the web-download Lambda's work; in-process locally). */
  runWebDownload(job: WebDownloadJob): Promise<"stored" | "failed">;
  /** Usage, limits and reconciliation (`npm run reconcile`, the scheduled reconciler). */
  quotas: QuotaService;
  log: Logger;
}

/** Composes the adapters into Hangar's use cases; one instance per Lambda container or local stack. */
export function createHangar(config: Config, options: { log?: Logger } = {}): Hangar {
  const log = options.log ?? createLogger();
  const clock: Clock = { now: () => new Date() };
  const dynamo = new DynamoDBClient({
    region: config.region,
    ...(config.dynamodbEndpoint ? { endpoint: config.dynamodbEndpoint } : {}),
  });
  const quota = new DynamoQuotaStore(dynamo, config.table, config.quotaDefaults);
  const images = new DynamoImageRepository(dynamo, config.table, quota);
  const objects = new S3ObjectStore({
    bucket: config.bucket,
    region: config.region,
    endpoint: config.s3Endpoint,
    publicEndpoint: config.s3PublicEndpoint,
    partSize: config.partSize,
  });
  const multipartStore = new S3MultipartUploads({
    bucket: config.bucket,
    region: config.region,
    endpoint: config.s3Endpoint,
    publicEndpoint: config.s3PublicEndpoint,
  });
  const multipart = createMultipartUploads({
    images,
    objects,
    uploads: multipartStore,
    clock,
    log,
    threshold: config.multipartThreshold,
    minPartSize: config.multipartPartSize,
    partUrlTtlSeconds: config.partUrlTtlSeconds,
    abandonAfterSeconds: config.abandonUploadsAfterSeconds,
  });
  const sweeper = createSweeper({
    images,
    objects,
    uploads: multipartStore,
    clock,
    log,
    abandonAfterSeconds: config.abandonUploadsAfterSeconds,
    stalledImportGraceSeconds: config.stalledImportGraceSeconds,
  });
  const members = new DynamoMemberRepository(dynamo, config.table);
  const webDownloadDeps = {
    images,
    objects,
    clock,
    log,
    resolve: systemResolver,
    fetch: pinnedFetch,
    policy: {
      maxBytes: config.webDownload.maxBytes,
      timeoutMs: config.webDownload.timeoutSeconds * 1000,
      allowLoopback: config.webDownload.allowLoopback,
    },
  };
  const fetchJob = (job: WebDownloadJob) => runWebDownload(webDownloadDeps, job);
  const dispatcher = config.webDownload.functionName
    ? new LambdaWebDownloads(config.webDownload.functionName, config.region)
    : new InProcessWebDownloads(fetchJob, log);
  const imageService = createImageService({
    images,
    objects,
    clock,
    log,
    newId: randomUUID,
    uploadUrlTtlSeconds: config.uploadUrlTtlSeconds,
    downloadUrlTtlSeconds: config.downloadUrlTtlSeconds,
    multipart,
    members,
    maxUploadSize: MAX_OBJECT_SIZE,
    webDownload: { dispatcher, resolve: systemResolver, allowLoopback: config.webDownload.allowLoopback },
  });
  const importer = createImporter({
    images,
    objects,
    clock,
    log,
    osHashAlgo: config.osHashAlgo,
    leaseSeconds: 16 * 60,
    policy: {
      preferredFormat: config.preferredFormat,
      acceptedFormats: config.acceptedFormats,
      maxVirtualSize: config.maxVirtualSize,
      maxGzipRatio: config.maxGzipRatio,
    },
    progressIntervalMs: 3000,
  });
  const quotas = createQuotaService({ quota, images, objects, log });
  const app = createApp({
    images: imageService,
    quotas,
    verifyToken: createTokenVerifier(config.jwt),
    log,
    // Beyond 5 GiB a declared upload gets a multipart plan; S3's object limit is the ceiling.
    maxUploadSize: MAX_OBJECT_SIZE,
    uploads: multipart,
    policy: {
      preferredFormat: config.preferredFormat,
      acceptedFormats: config.acceptedFormats,
      maxVirtualSize: config.maxVirtualSize,
      maxGzipRatio: config.maxGzipRatio,
      maxUploadSize: MAX_OBJECT_SIZE,
      webDownload: {
        enabled: true,
        maxBytes: config.webDownload.maxBytes,
        timeoutSeconds: config.webDownload.timeoutSeconds,
      },
    },
  });
  return {
    app,
    log,
    quotas,
    sweep: () => sweeper.sweep(),
    runWebDownload: fetchJob,
    async handleStorageEvent(body) {
      const outcomes: ImportOutcome[] = [];
      for (const event of parseStorageEvent(body)) {
        if (event.bucket !== config.bucket) {
          outcomes.push({ outcome: "ignored", why: `event for another bucket: ${event.bucket}` });
          continue;
        }
        const outcome = await importer.importStagedObject(event.key);
        if (outcome.outcome === "ignored") log.info("event ignored", { key: event.key, why: outcome.why });
        outcomes.push(outcome);
      }
      return outcomes;
    },
  };
}
