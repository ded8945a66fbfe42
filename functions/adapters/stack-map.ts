import { readFileSync } from "node:fs";
import { SourceMap } from "node:module";
import { basename } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Stack traces of a built bundle, mapped back to the TypeScript sources when they are logged.
 *
 * Node's `--enable-source-maps` parses a bundle's whole source map while the bundle loads, on every cold
 * start, to serve the few stack traces that are ever printed; that was a fifth of each function's module
 * init. Hangar reads the map (`index.mjs.map`, shipped beside the bundle) only when a stack trace is
 * logged or a handler throws, once per process. Run from the sources (tsx, tests), there is no bundle and
 * stack traces are returned as they are.
 */

/**
 * The folder of the bundle: its entry (`index.mjs`) and the chunks the build split off beside it, each
 * with its map; a file's map is read the first time one of its frames is mapped.
 */
type Loaded = { dir: string; dirUrl: string; maps: Map<string, SourceMap | null> } | null;
let loaded: Loaded | undefined;

function load(): Loaded {
  if (loaded !== undefined) return loaded;
  loaded = null;
  const bundle = fileURLToPath(import.meta.url);
  if (bundle.endsWith(".mjs")) {
    const dirUrl = import.meta.url.slice(0, import.meta.url.lastIndexOf("/") + 1);
    loaded = { dir: bundle.slice(0, bundle.length - basename(bundle).length), dirUrl, maps: new Map() };
  }
  return loaded;
}

function mapOf(bundle: NonNullable<Loaded>, file: string): SourceMap | null {
  let map = bundle.maps.get(file);
  if (map === undefined) {
    try {
      map = new SourceMap(JSON.parse(readFileSync(`${bundle.dir}${file}.map`, "utf8")));
    } catch {
      // No map beside the file: its frames stay as they are.
      map = null;
    }
    bundle.maps.set(file, map);
  }
  return map;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Where `source` (as the map names it, relative to the bundle) is in the repository: `functions/x.ts`. */
const repoPath = (source: string) =>
  source.replace(/^(?:\.\.\/)+/, "").replace(/^file:\/\/.*?\/functions\//, "functions/");

/**
 * `stack` with every frame in this bundle's folder (`file:///var/task/index.mjs:1:2345`, a chunk
 * `file:///var/task/chunk-X.mjs:1:99`, or the plain paths) rewritten to its source position
 * (`functions/http/app.ts:65:3`); frames elsewhere are kept.
 */
export function mapStack(stack: string, bundle: Loaded = load()): string {
  if (!bundle) return stack;
  const frame = new RegExp(
    `(?:${escapeRegExp(bundle.dirUrl)}|${escapeRegExp(bundle.dir)})([\\w.-]+\\.mjs):(\\d+):(\\d+)`,
    "g",
  );
  return stack.replace(frame, (whole, file: string, line: string, column: string) => {
    const map = mapOf(bundle, file);
    if (!map) return whole;
    const entry = map.findEntry(Number(line) - 1, Number(column) - 1) as {
      originalSource?: string;
      originalLine?: number;
      originalColumn?: number;
    };
    if (entry.originalSource === undefined || entry.originalLine === undefined) return whole;
    return `${repoPath(entry.originalSource)}:${entry.originalLine + 1}:${(entry.originalColumn ?? 0) + 1}`;
  });
}

/** The error with its stack trace mapped (the same object, for rethrowing), anything else as it is. */
export function withMappedStack<T>(err: T): T {
  if (err instanceof Error && typeof err.stack === "string") {
    try {
      err.stack = mapStack(err.stack);
    } catch {
      // Never let logging an error throw another one.
    }
  }
  return err;
}

/**
 * A Lambda handler whose thrown errors carry mapped stack traces, so the runtime's own log of a failed
 * invocation points at the sources too.
 */
export function mappingStacks<A extends unknown[], R>(handler: (...args: A) => Promise<R>) {
  return async (...args: A): Promise<R> => {
    try {
      return await handler(...args);
    } catch (err) {
      throw withMappedStack(err);
    }
  };
}

const needsMapping = (value: unknown) =>
  value instanceof Error || (typeof value === "string" && value.includes(".mjs:"));

/**
 * Log fields with errors turned into `{ name, message, stack }` and stack-like strings mapped. Fields
 * without either are returned as they are, without reading the map.
 */
export function mapLogFields(fields: Record<string, unknown>): Record<string, unknown> {
  if (!Object.values(fields).some(needsMapping)) return fields;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    if (value instanceof Error) {
      out[key] = { name: value.name, message: value.message, stack: mapStack(value.stack ?? "") };
    } else {
      out[key] = typeof value === "string" && value.includes(".mjs:") ? mapStack(value) : value;
    }
  }
  return out;
}
