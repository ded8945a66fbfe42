import type { FanoutFunctionConfig } from "../config.ts";
import { type ConvertInput, createFanoutWorker } from "../core/fanout/worker.ts";
import { fanoutStore, step } from "./fanout-store.ts";
import type { RootOptions } from "./store.ts";

/** The `fanoutWorker` function's root: one range of the stored image. */
export function createFanoutWorkerFunction(config: FanoutFunctionConfig, options: RootOptions = {}) {
  const { store, storage, progress } = fanoutStore(config, options);
  const worker = createFanoutWorker({
    images: store.images,
    clock: store.clock,
    log: store.log,
    storage,
    progress,
    maxVirtualSize: config.maxVirtualSize,
  });
  return { handle: (event: ConvertInput): Promise<void> => step(() => worker.convert(event)) };
}
