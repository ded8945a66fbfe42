import type { S3Event } from "aws-lambda";
import { loadConfig } from "../config.ts";
import { createHangar } from "../wiring.ts";

const hangar = createHangar(loadConfig(process.env));

/** S3 ObjectCreated on `staging/` → import. A thrown error makes Lambda retry, then the failure destination. */
export const handler = async (event: S3Event): Promise<void> => {
  await hangar.handleStorageEvent(event);
};
