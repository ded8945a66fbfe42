import type { FanoutFunctionConfig } from "../config.ts";
import { createFanoutHash, type HashStepInput } from "../core/fanout/hash-step.ts";
import { fanoutStore, step } from "./fanout-store.ts";
import type { RootOptions } from "./store.ts";

/** The `fanoutHash` function's root: one link of the hash chain. */
export function createFanoutHashFunction(config: FanoutFunctionConfig, options: RootOptions = {}) {
  const { store, storage, progress } = fanoutStore(config, options);
  const chain = createFanoutHash({
    images: store.images,
    clock: store.clock,
    log: store.log,
    storage,
    progress,
  });
  return { handle: (event: HashStepInput) => step(() => chain.hash(event)) };
}
