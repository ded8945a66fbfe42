import { Logger as PowertoolsLogger } from "@aws-lambda-powertools/logger";
import type { ConstructorOptions } from "@aws-lambda-powertools/logger/types";
import type { Context } from "aws-lambda";
import type { Logger } from "../core/ports.ts";
import { currentContext } from "./observability/context.ts";
import { mapLogFields } from "./stack-map.ts";

let powertools: PowertoolsLogger | undefined;

function instance(): PowertoolsLogger {
  powertools ??= new PowertoolsLogger({
    serviceName: "hangar",
    logLevel: (process.env.HANGAR_LOG_LEVEL ?? "INFO") as ConstructorOptions["logLevel"],
  });
  return powertools;
}

/**
 * Structured JSON logs (Powertools) behind the core's Logger port. Every line carries the Lambda context
 * of the invocation (function, its request id, cold start; see `addLambdaContext`) and the work's
 * `request_id` and `image_id` (`observability/context.ts`); stack traces point at the sources.
 */
export function createLogger(): Logger {
  const logger = instance();
  const fields = (extra: Record<string, unknown> | undefined) => ({ ...currentContext(), ...extra });
  return {
    info: (message, extra) => logger.info(message, fields(extra)),
    warn: (message, extra) => logger.warn(message, mapLogFields(fields(extra))),
    error: (message, extra) => logger.error(message, mapLogFields(fields(extra))),
  };
}

/** Adds the invocation's Lambda context (function name, request id, cold start) to the lines that follow. */
export function addLambdaContext(context: Context | undefined): void {
  if (context?.awsRequestId) instance().addContext(context);
}
