import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DynamoImageRepository } from "../adapters/dynamodb/image-repository.ts";
import { DynamoQuotaStore } from "../adapters/dynamodb/quota-store.ts";
import { createLogger } from "../adapters/log.ts";
import { S3ObjectStore } from "../adapters/s3/object-store.ts";
import type { StoreConfig } from "../config.ts";
import type { Clock, Logger } from "../core/ports.ts";

/** What every function works on: image records (with their quota), stored bytes, a clock and a log. */
export interface Store {
  dynamo: DynamoDBClient;
  quota: DynamoQuotaStore;
  images: DynamoImageRepository;
  objects: S3ObjectStore;
  clock: Clock;
  log: Logger;
}

/** Builds the store adapters every composition root shares; one per Lambda container. */
export function createStore(config: StoreConfig, options: { log?: Logger } = {}): Store {
  const dynamo = new DynamoDBClient({
    region: config.region,
    ...(config.dynamodbEndpoint ? { endpoint: config.dynamodbEndpoint } : {}),
  });
  const quota = new DynamoQuotaStore(dynamo, config.table, config.quotaDefaults);
  return {
    dynamo,
    quota,
    images: new DynamoImageRepository(dynamo, config.table, quota),
    objects: new S3ObjectStore({
      bucket: config.bucket,
      region: config.region,
      endpoint: config.s3Endpoint,
      publicEndpoint: config.s3PublicEndpoint,
      partSize: config.partSize,
    }),
    clock: { now: () => new Date() },
    log: options.log ?? createLogger(),
  };
}
