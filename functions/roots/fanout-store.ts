import { DynamoFanoutProgress } from "../adapters/dynamodb/fanout-progress.ts";
import { S3FanoutStorage } from "../adapters/s3/fanout-storage.ts";
import { createS3Client } from "../adapters/s3/object-store.ts";
import { ZeroObjects } from "../adapters/s3/zero-object.ts";
import type { FanoutFunctionConfig } from "../config.ts";
import { stepError } from "../core/fanout/held.ts";
import { createStore, type RootOptions } from "./store.ts";

/** What the three fan-out functions share: the store, the multipart writes, the progress counters. */
export function fanoutStore(config: FanoutFunctionConfig, options: RootOptions) {
  const store = createStore(config, options);
  const s3 = createS3Client(config.region, config.s3Endpoint);
  return {
    store,
    // Parts of zeros a worker writes are copied from objects of zeros (zeros/<bytes>), made on first need.
    storage: new S3FanoutStorage(s3, config.bucket, new ZeroObjects(s3, config.bucket)),
    progress: new DynamoFanoutProgress(store.dynamo, config.table),
  };
}

/** A step's failure as the state machine sees it: permanent import failures named `Hangar.<REASON>`. */
export async function step<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw stepError(err);
  }
}
