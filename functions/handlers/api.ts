import { handle } from "hono/aws-lambda";
import { mappingStacks } from "../adapters/stack-map.ts";
import { loadApiConfig } from "../config.ts";
import { createApiFunction } from "../roots/api.ts";

const api = createApiFunction(loadApiConfig(process.env));

/** API Gateway HTTP API (payload 2.0) → the Glance v2 app. */
export const handler = mappingStacks(handle(api.app));
