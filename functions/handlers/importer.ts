import type { S3Event } from "aws-lambda";
import { lambdaHandler } from "../adapters/observability/lambda.ts";
import { loadImporterConfig } from "../config.ts";
import { createImporterFunction } from "../roots/importer.ts";

const importer = createImporterFunction(loadImporterConfig(process.env));

/** S3 ObjectCreated on `staging/` → import. A thrown error makes Lambda retry, then the failure destination. */
export const handler = lambdaHandler(async (event: S3Event): Promise<void> => {
  await importer.handle(event);
});
