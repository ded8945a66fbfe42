import type { ReconcilerConfig } from "../config.ts";
import { createQuotaService } from "../core/quota-service.ts";
import { createStore, type RootOptions } from "./store.ts";

/** The reconciler function's composition root: quota usage recomputed from records and storage. */
export function createReconcilerFunction(config: ReconcilerConfig, options: RootOptions = {}) {
  const store = createStore(config, options);
  return {
    log: store.log,
    quotas: createQuotaService({
      quota: store.quota,
      images: store.images,
      objects: store.objects,
      log: store.log,
    }),
  };
}
