import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";
import { lambdaHandler } from "../adapters/observability/lambda.ts";
import { loadWebDownloadConfig } from "../config.ts";
import { createWebDownloadFunction } from "../roots/web-download.ts";

const webDownload = createWebDownloadFunction(loadWebDownloadConfig(process.env));

// zod's mini API loads no locale of its own: the job's refusals are in English, as every message.
z.config(en());

const Job = z.object({
  imageId: z.uuid(),
  uri: z.string().check(z.minLength(1), z.maxLength(2048)),
  lease: z.iso.datetime(),
});

/** Asynchronous invocation from the API: fetch one web-download URL into the image's staging key. */
export const handler = lambdaHandler(
  async (event: unknown): Promise<{ outcome: "stored" | "failed" }> => ({
    outcome: await webDownload.run(Job.parse(event)),
  }),
  // The API passes the request id of the import call that started the job.
  (event) => {
    const job = event as { imageId?: unknown; requestId?: unknown };
    return {
      image_id: typeof job.imageId === "string" ? job.imageId : undefined,
      request_id: typeof job.requestId === "string" ? job.requestId : undefined,
    };
  },
);
