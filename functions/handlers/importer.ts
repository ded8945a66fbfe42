import type { S3Event } from "aws-lambda";
import { mappingStacks } from "../adapters/stack-map.ts";
import { loadImporterConfig } from "../config.ts";
import { createImporterFunction } from "../roots/importer.ts";

const importer = createImporterFunction(loadImporterConfig(process.env));

/** S3 ObjectCreated on `staging/` → import. A thrown error makes Lambda retry, then the failure destination. */
export const handler = mappingStacks(async (event: S3Event): Promise<void> => {
  await importer.handle(event);
});
