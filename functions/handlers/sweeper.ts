import { lambdaHandler } from "../adapters/observability/lambda.ts";
import { loadSweeperConfig } from "../config.ts";
import { createSweeperFunction } from "../roots/sweeper.ts";

const sweeper = createSweeperFunction(loadSweeperConfig(process.env));

/**
 * Scheduled (EventBridge): `{"task": "redrive"}` (every minute) hands stale imports back to the importer;
 * any other event (hourly) is the housekeeping sweep.
 */
export const handler = lambdaHandler(async (event: unknown): Promise<void> => {
  const task = event && typeof event === "object" ? (event as { task?: unknown }).task : undefined;
  if (task === "redrive") await sweeper.redrive();
  else await sweeper.sweep();
});
