import { fileURLToPath } from "node:url";
import { handle } from "hono/aws-lambda";
import { lambdaHandler } from "../adapters/observability/lambda.ts";
import { loadApiConfig } from "../config.ts";
import { createApiFunction } from "../roots/api.ts";

// The browser page's files sit in ui/ beside the bundle (scripts/build.mjs).
const api = createApiFunction(loadApiConfig(process.env), {
  pageDir: fileURLToPath(new URL("./ui/", import.meta.url)),
});

/** API Gateway HTTP API (payload 2.0) → the Glance v2 app. */
// The request id is the one the app answers with (x-openstack-request-id), set by its first middleware.
export const handler = lambdaHandler(handle(api.app));
