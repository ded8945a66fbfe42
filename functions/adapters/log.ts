import { Logger as PowertoolsLogger } from "@aws-lambda-powertools/logger";
import type { ConstructorOptions } from "@aws-lambda-powertools/logger/types";
import type { Logger } from "../core/ports.ts";
import { mapLogFields } from "./stack-map.ts";

/** Structured JSON logs (Powertools) behind the core's Logger port; stack traces point at the sources. */
export function createLogger(serviceName = "hangar"): Logger {
  const logger = new PowertoolsLogger({
    serviceName,
    logLevel: (process.env.HANGAR_LOG_LEVEL ?? "INFO") as ConstructorOptions["logLevel"],
  });
  return {
    info: (message, fields) => logger.info(message, fields ?? {}),
    warn: (message, fields) => logger.warn(message, mapLogFields(fields ?? {})),
    error: (message, fields) => logger.error(message, mapLogFields(fields ?? {})),
  };
}
