import { pinnedFetch, systemResolver } from "../adapters/http/web-download.ts";
import type { WebDownloadFunctionConfig } from "../config.ts";
import type { WebDownloadJob } from "../core/ports.ts";
import { runWebDownload } from "../core/web-download.ts";
import { createStore, type RootOptions } from "./store.ts";

/** The web-download function's composition root: fetch one URL into the image's staging key. */
export function createWebDownloadFunction(config: WebDownloadFunctionConfig, options: RootOptions = {}) {
  const store = createStore(config, options);
  const deps = {
    images: store.images,
    objects: store.objects,
    clock: store.clock,
    log: store.log,
    resolve: systemResolver,
    fetch: pinnedFetch,
    policy: {
      maxBytes: config.webDownload.maxBytes,
      timeoutMs: config.webDownload.timeoutSeconds * 1000,
      allowLoopback: config.webDownload.allowLoopback,
    },
  };
  return { run: (job: WebDownloadJob) => runWebDownload(deps, job) };
}
