import type { FanoutFunctionConfig } from "../config.ts";
import { createFanoutControl } from "../core/fanout/control.ts";
import { fanoutStore, step } from "./fanout-store.ts";
import { recordImport } from "./import-metrics.ts";
import type { RootOptions } from "./store.ts";

type ControlEvent = { step?: unknown } & Record<string, unknown>;

/** The `fanoutControl` function's root: the plan, complete, finish and cleanup steps. */
export function createFanoutControlFunction(config: FanoutFunctionConfig, options: RootOptions = {}) {
  const { store, storage } = fanoutStore(config, options);
  const control = createFanoutControl({
    images: store.images,
    objects: store.objects,
    storage,
    clock: store.clock,
    log: store.log,
    // The importer's `import result` line and metrics, for the image's actual end.
    onSettled: (outcome, ms) => recordImport(outcome, ms, store),
  });
  return {
    handle: (event: ControlEvent): Promise<unknown> =>
      step(async () => {
        const input = event as never;
        switch (event.step) {
          case "plan":
            return control.plan(input);
          case "complete":
            return control.complete(input);
          case "finish":
            return control.finish(input);
          case "cleanup":
            return control.cleanup(input);
          default:
            throw new Error(`unknown fan-out control step ${String(event.step)}`);
        }
      }),
  };
}
