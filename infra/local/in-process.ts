import type { Config } from "../../functions/config.ts";
import type { Logger } from "../../functions/core/ports.ts";
import { createApiFunction } from "../../functions/roots/api.ts";
import { createImporterFunction } from "../../functions/roots/importer.ts";
import { createSweeperFunction } from "../../functions/roots/sweeper.ts";

/**
 * The API, importer and sweeper composed in one process from their composition roots, for tests and
 * benchmarks that need Hangar with a configuration of their own (another bucket, another policy).
 */
export function createInProcessHangar(config: Config, options: { log?: Logger } = {}) {
  // Metrics are the functions' stdout lines in Lambda and on the stack; in a test's process they would
  // only be noise.
  const roots = { ...options, metrics: { add() {} } };
  const api = createApiFunction(config, roots);
  const importer = createImporterFunction(config, roots);
  const sweeper = createSweeperFunction(config, roots);
  return {
    app: api.app,
    handleStorageEvent: importer.handle,
    sweep: () => sweeper.sweep(),
  };
}

export type InProcessHangar = ReturnType<typeof createInProcessHangar>;
