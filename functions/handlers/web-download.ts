import { z } from "zod";
import { loadConfig } from "../config.ts";
import { createHangar } from "../wiring.ts";

const hangar = createHangar(loadConfig(process.env));

const Job = z.object({ imageId: z.uuid(), uri: z.string().min(1).max(2048) });

/** Asynchronous invocation from the API: fetch one web-download URL into the image's staging key. */
export async function handler(event: unknown): Promise<{ outcome: "stored" | "failed" }> {
  return { outcome: await hangar.runWebDownload(Job.parse(event)) };
}
