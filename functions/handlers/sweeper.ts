import { loadSweeperConfig } from "../config.ts";
import { createSweeperFunction } from "../roots/sweeper.ts";

const sweeper = createSweeperFunction(loadSweeperConfig(process.env));

/** Scheduled (EventBridge) housekeeping: abandoned uploads, stale staged objects, stalled imports. */
export const handler = async (): Promise<void> => {
  await sweeper.sweep();
};
