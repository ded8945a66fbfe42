import * as z from "zod";
import { mappingStacks } from "../adapters/stack-map.ts";
import { loadWebDownloadConfig } from "../config.ts";
import { createWebDownloadFunction } from "../roots/web-download.ts";

const webDownload = createWebDownloadFunction(loadWebDownloadConfig(process.env));

const Job = z.object({ imageId: z.uuid(), uri: z.string().min(1).max(2048), lease: z.iso.datetime() });

/** Asynchronous invocation from the API: fetch one web-download URL into the image's staging key. */
export const handler = mappingStacks(
  async (event: unknown): Promise<{ outcome: "stored" | "failed" }> => ({
    outcome: await webDownload.run(Job.parse(event)),
  }),
);
