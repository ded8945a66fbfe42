import { handle } from "hono/aws-lambda";
import { loadConfig } from "../config.ts";
import { createHangar } from "../wiring.ts";

const hangar = createHangar(loadConfig(process.env));

/** API Gateway HTTP API → the Glance v2 app. */
export const handler = handle(hangar.app);
