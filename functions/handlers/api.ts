import { handle } from "hono/aws-lambda";
import { lambdaHandler } from "../adapters/observability/lambda.ts";
import { loadApiConfig } from "../config.ts";
import { createApiFunction } from "../roots/api.ts";

const api = createApiFunction(loadApiConfig(process.env));

/** API Gateway HTTP API (payload 2.0) → the Glance v2 app. */
// The request id is the one the app answers with (x-openstack-request-id), set by its first middleware.
export const handler = lambdaHandler(handle(api.app));
