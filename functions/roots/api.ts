import { randomUUID } from "node:crypto";
import { createRemoteJWKSet, type JWTVerifyGetKey } from "jose";
import { DynamoMemberRepository } from "../adapters/dynamodb/member-repository.ts";
import { FolderPageFiles } from "../adapters/files/page-files.ts";
import type { ApiConfig } from "../config.ts";
import { createImageService } from "../core/images.ts";
import type { WebDownloadDispatcher } from "../core/ports.ts";
import { createQuotaService } from "../core/quota-service.ts";
import { createMultipartUploads } from "../core/uploads/multipart.ts";
import { MAX_OBJECT_SIZE } from "../core/uploads/plan.ts";
import { createApp } from "../http/app.ts";
import { createTokenVerifier } from "../http/auth.ts";
import { lazily } from "./lazy.ts";
import { createStore, type RootOptions } from "./store.ts";

/**
 * The JWKS at `url` as jose's remote key set, made when the first token is verified rather than in the
 * module's init: making it creates a `Headers`, which loads Node's built-in undici (fetch, and the
 * modules it needs: http2, worker_threads, perf_hooks), about 25 ms of CPU. The first request loads
 * undici anyway (the Lambda adapter hands the app a `Request`, and the keys are fetched with `fetch`);
 * init does not. The URL is checked here, so a bad one still fails the function's init.
 */
export function lazyRemoteKeys(url: string): JWTVerifyGetKey {
  const parsed = new URL(url);
  let keys: JWTVerifyGetKey | undefined;
  return (header, token) => {
    keys ??= createRemoteJWKSet(parsed);
    return keys(header, token);
  };
}

/** The API function's composition root: the Glance v2 app over the store, links and quotas. */
export function createApiFunction(config: ApiConfig, options: RootOptions & { pageDir?: string } = {}) {
  const store = createStore(config, options);
  const { images, objects, clock, log } = store;
  const multipart = createMultipartUploads({
    images,
    objects,
    uploads: lazily(
      async () =>
        new (await import("../adapters/s3/multipart.ts")).S3MultipartUploads({
          bucket: config.bucket,
          region: config.region,
          endpoint: config.s3Endpoint,
          publicEndpoint: config.s3PublicEndpoint,
        }),
    ),
    clock,
    log,
    threshold: config.multipartThreshold,
    minPartSize: config.multipartPartSize,
    partUrlTtlSeconds: config.partUrlTtlSeconds,
    abandonAfterSeconds: config.abandonUploadsAfterSeconds,
  });
  const { functionName, lambdaEndpoint } = config.webDownload;
  // Tests that build the app in-process have no Lambda to invoke; they run the job in this process.
  // Imports from the web are rare: their dispatch, and the resolver that checks the address, load then.
  const webDownloads = () => import("../adapters/http/web-download.ts");
  const dispatcher = lazily<WebDownloadDispatcher>(async () => {
    const { InProcessWebDownloads, LambdaWebDownloads } = await webDownloads();
    if (functionName) return new LambdaWebDownloads(functionName, config.region, lambdaEndpoint);
    const { createWebDownloadFunction } = await import("./web-download.ts");
    return new InProcessWebDownloads(
      createWebDownloadFunction(config, { log, metrics: store.metrics }).run,
      log,
    );
  });
  const imageService = createImageService({
    images,
    objects,
    clock,
    log,
    newId: randomUUID,
    uploadUrlTtlSeconds: config.uploadUrlTtlSeconds,
    downloadUrlTtlSeconds: config.downloadUrlTtlSeconds,
    multipart,
    members: store.publishingMembers(new DynamoMemberRepository(store.dynamo, config.table)),
    maxUploadSize: MAX_OBJECT_SIZE,
    webDownload: {
      dispatcher,
      resolve: async (host) => (await webDownloads()).systemResolver(host),
      allowLoopback: config.webDownload.allowLoopback,
      // The fetch's whole time limit, and a minute for the function to start and to give the image back.
      leaseSeconds: config.webDownload.timeoutSeconds + 60,
    },
  });
  const policy = {
    preferredFormat: config.preferredFormat,
    acceptedFormats: config.acceptedFormats,
    maxVirtualSize: config.maxVirtualSize,
    maxGzipRatio: config.maxGzipRatio,
  };
  const app = createApp({
    images: imageService,
    quotas: createQuotaService({ quota: store.quota, images, objects, log }),
    verifyToken: createTokenVerifier(
      config.jwt.jwksUrl ? { ...config.jwt, keys: lazyRemoteKeys(config.jwt.jwksUrl) } : config.jwt,
      (m, f) => log.warn(m, f),
    ),
    log,
    metrics: store.metrics,
    // Beyond 5 GiB a declared upload gets a multipart plan; S3's object limit is the ceiling.
    maxUploadSize: MAX_OBJECT_SIZE,
    uploads: multipart,
    ...(options.pageDir ? { page: new FolderPageFiles(options.pageDir) } : {}),
    policy: {
      ...policy,
      maxUploadSize: MAX_OBJECT_SIZE,
      webDownload: {
        enabled: true,
        maxBytes: config.webDownload.maxBytes,
        timeoutSeconds: config.webDownload.timeoutSeconds,
      },
    },
  });
  return { app };
}
