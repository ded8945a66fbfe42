import { EventBridgeSink } from "../adapters/aws/eventbridge.ts";
import { DynamoImageRepository } from "../adapters/dynamodb/image-repository.ts";
import type { ItemClient } from "../adapters/dynamodb/item-commands.ts";
import { LeanDynamoDBClient } from "../adapters/dynamodb/lean-client.ts";
import { DynamoQuotaStore } from "../adapters/dynamodb/quota-store.ts";
import { createLogger } from "../adapters/log.ts";
import { currentContext } from "../adapters/observability/context.ts";
import { createMetrics, type MetricRecorder, MetricUnit } from "../adapters/observability/metrics.ts";
import type { S3ObjectStore } from "../adapters/s3/object-store.ts";
import type { StoreConfig } from "../config.ts";
import {
  type LifecycleEventSink,
  NO_EVENTS,
  type PublishFailureCounter,
  publishingImages,
  publishingMembers,
} from "../core/lifecycle.ts";
import type { Clock, Logger, MemberRepository } from "../core/ports.ts";
import { lazily } from "./lazy.ts";

/** What every function works on: image records (with their quota), stored bytes, a clock and a log. */
export interface Store {
  dynamo: ItemClient;
  quota: DynamoQuotaStore;
  /** Image records; every create and transition publishes its lifecycle events. */
  images: DynamoImageRepository;
  objects: S3ObjectStore;
  clock: Clock;
  log: Logger;
  metrics: MetricRecorder;
  /** Where lifecycle events go (EventBridge, or nowhere). */
  events: LifecycleEventSink;
  /** `members`, publishing `image.member.*` events. */
  publishingMembers<R extends MemberRepository>(members: R): R;
}

/**
 * What a composition root may be given instead of its defaults: in Lambda, none (Powertools logs and EMF
 * metrics on stdout); in-process (tests, the bench), a log of the caller's and metrics kept quiet.
 */
export interface RootOptions {
  log?: Logger;
  metrics?: MetricRecorder;
}

/** Builds the store adapters every composition root shares; one per Lambda container. */
export function createStore(config: StoreConfig, options: RootOptions = {}): Store {
  // Item reads, writes and queries are one signed POST each (lean-client.ts): no SDK client to load.
  const dynamo = new LeanDynamoDBClient({
    region: config.region,
    ...(config.dynamodbEndpoint ? { endpoint: config.dynamodbEndpoint } : {}),
  });
  const quota = new DynamoQuotaStore(dynamo, config.table, config.quotaDefaults);
  const log = options.log ?? createLogger();
  const metrics = options.metrics ?? createMetrics("hangar");
  const events = config.events
    ? new EventBridgeSink(config.events.bus, config.region, config.events.endpoint)
    : NO_EVENTS;
  const failed: PublishFailureCounter = (lost) =>
    metrics.add("LifecycleEventsNotPublished", MetricUnit.Count, lost.length);
  const records = new DynamoImageRepository(dynamo, config.table, quota);
  const images = publishingImages(records, events, log, {
    failed,
    requestId: () => currentContext().request_id,
  });
  return {
    dynamo,
    quota,
    images,
    // The S3 client and its commands are a fifth of a bundle; the api's reads and edits of records never
    // need them (lazy.ts).
    objects: lazily(
      async () =>
        new (await import("../adapters/s3/object-store.ts")).S3ObjectStore({
          bucket: config.bucket,
          region: config.region,
          endpoint: config.s3Endpoint,
          publicEndpoint: config.s3PublicEndpoint,
          partSize: config.partSize,
        }),
    ),
    clock: { now: () => new Date() },
    log,
    metrics,
    events,
    publishingMembers: (members) =>
      publishingMembers(members, async (id) => (await records.get(id))?.owner, events, log, failed),
  };
}
