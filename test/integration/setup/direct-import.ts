import { randomUUID } from "node:crypto";
import { DynamoImageRepository } from "../../../functions/adapters/dynamodb/image-repository.ts";
import { DynamoQuotaStore } from "../../../functions/adapters/dynamodb/quota-store.ts";
import { createImageService } from "../../../functions/core/images.ts";
import { createImporter } from "../../../functions/core/import/import-uploaded-image.ts";
import type { Logger, ObjectStore } from "../../../functions/core/ports.ts";
import { UNLIMITED } from "../../../functions/core/quota.ts";
import { getStack, itemClient } from "./stack.ts";

/**
 * The image service and the importer over the stack's DynamoDB Local and the given object store, with no
 * quota and an operator preferring raw: for tests that drive an import directly on a bucket of their own
 * (no notifications, so the stack's own importer stays out of it).
 */
export function directImport(
  objects: ObjectStore,
  o: { log: Logger; acceptedFormats: string[]; uploadUrlTtlSeconds: number },
) {
  const info = getStack();
  const dynamo = itemClient();
  const images = new DynamoImageRepository(
    dynamo,
    info.table,
    new DynamoQuotaStore(dynamo, info.table, UNLIMITED),
  );
  const clock = { now: () => new Date() };
  const service = createImageService({
    images,
    objects,
    clock,
    log: o.log,
    newId: randomUUID,
    uploadUrlTtlSeconds: o.uploadUrlTtlSeconds,
    downloadUrlTtlSeconds: 60,
  });
  const importer = createImporter({
    images,
    objects,
    clock,
    log: o.log,
    osHashAlgo: "sha512",
    leaseSeconds: 60,
    maxTakeovers: 3,
    progressIntervalMs: 1000,
    policy: {
      preferredFormat: "raw",
      acceptedFormats: o.acceptedFormats,
      maxVirtualSize: 2 ** 40,
      maxGzipRatio: 64,
    },
  });
  return { images, service, importer };
}
