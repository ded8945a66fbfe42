import { loadConfig } from "../config.ts";
import { createHangar } from "../wiring.ts";

const hangar = createHangar(loadConfig(process.env));

/** Scheduled (EventBridge) housekeeping: abandoned uploads, stale staged objects, stalled imports. */
export const handler = async (): Promise<void> => {
  await hangar.sweep();
};
