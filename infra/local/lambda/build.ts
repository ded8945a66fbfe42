import { cp, mkdir, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { FUNCTIONS } from "./functions.ts";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

type BuildHandlers = (names: string[]) => Promise<unknown>;

/**
 * Builds the bundles the local functions run, with the deploy build (scripts/build.mjs, to `dist/`), and
 * copies them to `<target>/<handler>/`, so a later `npm run build` cannot change code a running stack
 * loads when it restarts a function. Returns `target`.
 */
export async function buildFunctionBundles(target: string): Promise<string> {
  const handlers = Object.values(FUNCTIONS).map((f) => f.handler);
  // Loaded by URL: build.mjs is plain JavaScript with no type declarations.
  const build = (await import(pathToFileURL(join(repoRoot, "scripts", "build.mjs")).href)) as {
    buildHandlers: BuildHandlers;
  };
  await build.buildHandlers(handlers);
  await rm(target, { recursive: true, force: true });
  await mkdir(target, { recursive: true });
  for (const handler of handlers) {
    await cp(join(repoRoot, "dist", handler), join(target, handler), { recursive: true });
  }
  return target;
}

/** Where a built function's bundle is: `<dir>/<handler>/index.mjs`. */
export function bundlePath(dir: string, handler: string): string {
  return join(dir, handler, "index.mjs");
}
