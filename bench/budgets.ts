/**
 * Bundle budgets: what each Lambda zip may weigh in JavaScript and how long its module init may take, and
 * how both are measured. Used by `npm run bench` (bench/run.ts) and test/unit/bundles.test.ts.
 *
 * - JavaScript: the bytes of `<name>/index.mjs` and of every chunk beside it (`chunk-*.mjs`, modules the
 *   function imports when first used) as `scripts/build.mjs` writes them (minified, source maps beside
 *   them, not counted), read from the bundle's esbuild metafile.
 * - Module init: a fresh Node process with the function's configuration in its environment imports the
 *   built bundle; the time of that `import()` is taken inside the process (Node's own start-up is not
 *   in it), the median of INIT_RUNS processes. Endpoints are loopback addresses nobody listens on: init
 *   must not need the network, and the child reports any connection attempted during the import.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const KiB = 1024;

export interface Budget {
  /** Largest JavaScript bundle (KiB). */
  jsKiB: number;
  /** Slowest median module init (ms, on the development machine). */
  initMs?: number;
}

/**
 * The budgets. A function without a budget is only reported; a budget whose function is not built (the
 * handler was removed) is not checked.
 */
export const BUDGETS: Readonly<Record<string, Budget>> = {
  api: { jsKiB: 800, initMs: 120 },
  importer: { jsKiB: 600, initMs: 120 },
};

export const INIT_RUNS = 5;

const repoRoot = resolve(import.meta.dirname, "..");

/** The slice of esbuild's metafile that `scripts/build.mjs` writes beside each bundle. */
export interface Metafile {
  inputs: Record<string, { bytes: number }>;
  outputs: Record<
    string,
    {
      bytes: number;
      entryPoint?: string;
      inputs: Record<string, { bytesInOutput: number }>;
      imports?: { path: string; kind: string; external?: boolean }[];
    }
  >;
}

/**
 * The inputs (source files) a function's init loads: those of its `index.mjs` and of every chunk it reaches
 * by static imports (what an `import()` reaches is left for the request that asks for it).
 */
export function initInputs(metafile: Metafile): string[] {
  const [entry] = Object.keys(metafile.outputs).filter((file) => /(^|\/)index\.mjs$/.test(file));
  const seen = new Set<string>();
  const todo = entry ? [entry] : [];
  for (let file = todo.pop(); file !== undefined; file = todo.pop()) {
    if (seen.has(file)) continue;
    seen.add(file);
    for (const i of metafile.outputs[file]?.imports ?? []) {
      if (i.kind === "import-statement" && !i.external && metafile.outputs[i.path]) todo.push(i.path);
    }
  }
  return [...seen].flatMap((file) => Object.keys(metafile.outputs[file]?.inputs ?? {})).sort();
}

/** The packages a function's init loads (those of `initInputs`). */
export function initPackages(metafile: Metafile): string[] {
  return [...new Set(initInputs(metafile).flatMap((input) => packageOf(input)?.name ?? []))].sort();
}

export interface BuiltBundle {
  name: string;
  /** Absolute path of the bundle (`<outDir>/<name>/index.mjs`). */
  bundle: string;
  metafile: Metafile;
}

/** Runs `scripts/build.mjs --outdir <outDir>` (every handler) and reads back what it wrote. */
export function buildBundles(outDir: string): BuiltBundle[] {
  const r = spawnSync(process.execPath, [join(repoRoot, "scripts/build.mjs"), "--outdir", outDir], {
    cwd: repoRoot,
    encoding: "utf8",
    timeout: 120_000,
  });
  if (r.status !== 0) throw new Error(`build failed (${r.status ?? r.signal}): ${r.stderr}${r.stdout}`);
  return readBundles(outDir);
}

/** Every bundle under `outDir` that has a metafile beside it. */
export function readBundles(outDir: string): BuiltBundle[] {
  return readdirSync(outDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(outDir, d.name, "metafile.json")))
    .map((d) => ({
      name: d.name,
      bundle: join(outDir, d.name, "index.mjs"),
      metafile: JSON.parse(readFileSync(join(outDir, d.name, "metafile.json"), "utf8")) as Metafile,
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** The function's entry, `index.mjs` (the chunks its `import()`s load are entry points of esbuild's too). */
function entryOutput(metafile: Metafile) {
  const outputs = Object.entries(metafile.outputs).filter(([file]) => /(^|\/)index\.mjs$/.test(file));
  if (outputs.length !== 1 || !outputs[0]) throw new Error("expected a metafile of exactly one bundle");
  return outputs[0][1];
}

/** The bundle's JavaScript files: its entry and every chunk beside it (`.mjs`; source maps are not). */
export function jsOutputs(metafile: Metafile): Metafile["outputs"][string][] {
  entryOutput(metafile);
  return Object.entries(metafile.outputs)
    .filter(([file]) => file.endsWith(".mjs"))
    .map(([, o]) => o);
}

/** The bundle's JavaScript bytes: the entry and every chunk, whether init loads it or a later request. */
export const jsBytes = (metafile: Metafile): number =>
  jsOutputs(metafile).reduce((sum, o) => sum + o.bytes, 0);

/** Every input of the bundle's JavaScript with the bytes it left there, over the entry and its chunks. */
function bundleInputs(metafile: Metafile): [string, number][] {
  return jsOutputs(metafile).flatMap((o) =>
    Object.entries(o.inputs).map(([input, { bytesInOutput }]): [string, number] => [input, bytesInOutput]),
  );
}

/**
 * Where an input comes from: the package (`@smithy/core`) and the directory it was installed in
 * (`…/node_modules/@aws-sdk/client-s3/node_modules/@smithy/core`); undefined for Hangar's own sources.
 */
export function packageOf(input: string): { name: string; dir: string } | undefined {
  const at = input.lastIndexOf("node_modules/");
  if (at < 0) return undefined;
  const parts = input.slice(at + "node_modules/".length).split("/");
  const depth = parts[0]?.startsWith("@") ? 2 : 1;
  const name = parts.slice(0, depth).join("/");
  return { name, dir: `${input.slice(0, at)}node_modules/${name}` };
}

/** Bytes each package contributes to the bundle (by package name, all its copies together), largest first. */
export function packageSizes(metafile: Metafile): [string, number][] {
  const sizes = new Map<string, number>();
  for (const [input, bytesInOutput] of bundleInputs(metafile)) {
    const name = packageOf(input)?.name ?? input.split("/").slice(0, 2).join("/");
    sizes.set(name, (sizes.get(name) ?? 0) + bytesInOutput);
  }
  return [...sizes].sort((a, b) => b[1] - a[1]);
}

/** Packages the bundle holds more than one copy of (one name, several install directories). */
export function duplicatePackages(metafile: Metafile): { name: string; dirs: string[] }[] {
  const dirs = new Map<string, Set<string>>();
  for (const [input] of bundleInputs(metafile)) {
    const pkg = packageOf(input);
    if (!pkg) continue;
    const set = dirs.get(pkg.name) ?? new Set<string>();
    set.add(pkg.dir);
    dirs.set(pkg.name, set);
  }
  return [...dirs].filter(([, set]) => set.size > 1).map(([name, set]) => ({ name, dirs: [...set].sort() }));
}

/** Over-budget findings for one bundle; empty when it holds its budget (or has none). */
export function sizeFindings(bundle: BuiltBundle, budgets: Readonly<Record<string, Budget>> = BUDGETS) {
  const budget = budgets[bundle.name];
  const kib = jsBytes(bundle.metafile) / KiB;
  return budget && kib > budget.jsKiB
    ? [`${bundle.name}: ${kib.toFixed(1)} KiB of JavaScript, budget ${budget.jsKiB} KiB`]
    : [];
}

// Loopback ports nothing listens on: a connection during init would fail, and is reported anyway.
const NOWHERE = "http://127.0.0.1:9";

/**
 * The configuration each function starts with, as serverless.yml gives it in AWS, with local-looking
 * endpoints. Dummy static credentials, so the default chain would never look further.
 */
export function initEnv(name: string): Record<string, string> {
  const node = {
    // Lambda runs Node 22, where the SDK has nothing to warn about; on older Node the warning's own
    // printing would be timed.
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
  };
  const store = {
    ...node,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "bench",
    AWS_SECRET_ACCESS_KEY: "bench",
    HANGAR_TABLE: "hangar-bench",
    HANGAR_BUCKET: "hangar-bench",
    HANGAR_S3_ENDPOINT: NOWHERE,
    HANGAR_DYNAMODB_ENDPOINT: NOWHERE,
    // Every function has it in serverless.yml: lifecycle events are published to this bus.
    HANGAR_EVENT_BUS: "hangar-bench",
    POWERTOOLS_METRICS_NAMESPACE: "Hangar",
  };
  const jwt = { HANGAR_JWT_ISSUER: "https://issuer.invalid/", HANGAR_JWT_JWKS_URL: `${NOWHERE}/jwks.json` };
  const webDownload = {
    HANGAR_WEB_DOWNLOAD_FUNCTION: "hangar-web-download",
    HANGAR_LAMBDA_ENDPOINT: NOWHERE,
  };
  switch (name) {
    case "api":
      return { ...store, ...jwt, ...webDownload };
    case "web-download":
      return { ...store, ...webDownload };
    default:
      return store;
  }
}

/** One import of `bundle` in this child: the time of the `import()` and any connection it attempted. */
const INIT_CHILD = `
import net from "node:net";
import { pathToFileURL } from "node:url";
const connects = [];
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  connects.push(JSON.stringify(args[0]));
  return connect.apply(this, args);
};
// zod calls this hook with every schema and check it constructs (zod/v4/core's $constructor).
let zodInstances = 0;
globalThis.__zod_globalConfig = { postProcessor: () => { zodInstances++; } };
const loaded = new Set(process.moduleLoadList);
const started = performance.now();
const cpu = process.cpuUsage();
const mod = await import(pathToFileURL(process.argv[1]).href);
const ms = performance.now() - started;
const { user, system } = process.cpuUsage(cpu);
const builtins = process.moduleLoadList.filter((m) => !loaded.has(m) && m.startsWith("NativeModule ")).map((m) => m.slice("NativeModule ".length));
process.stdout.write(JSON.stringify({ ms, cpuMs: (user + system) / 1000, handler: typeof mod.handler, connects, builtins, zodInstances }) + "\\n");
process.exit(0);
`;

export interface InitResult {
  medianMs: number;
  samples: number[];
  /** CPU time (user + system) of each import: less swayed than wall time by a busy machine. */
  cpuSamples: number[];
  /** Connections attempted while importing (must be none). */
  connects: string[];
  /** Node's own modules the import loaded (`process.moduleLoadList`), e.g. `internal/deps/undici/undici`. */
  builtins: string[];
  /** zod schemas and checks the import constructed (the most of any process). */
  zodInstances: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] ?? Number.NaN) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

/**
 * Module init of a built bundle: median of `runs` fresh processes, each timing its own import. `cpu` pins
 * every process to that vCPU (`taskset -c`): the two of the development machine have run the same code
 * 20 to 45 % apart for minutes, so comparisons are made on one at a time (bench/init-ab.ts).
 */
export function measureInit(
  bundle: string,
  env: Record<string, string>,
  runs = INIT_RUNS,
  options: { cpu?: number } = {},
): InitResult {
  const samples: number[] = [];
  const cpuSamples: number[] = [];
  const connects = new Set<string>();
  const builtins = new Set<string>();
  let zodInstances = 0;
  for (let i = 0; i < runs; i++) {
    const node = [process.execPath, "--input-type=module", "-e", INIT_CHILD, bundle];
    const [command = "", ...args] =
      options.cpu === undefined ? node : ["taskset", "-c", String(options.cpu), ...node];
    const r = spawnSync(command, args, {
      // Nothing of this machine's environment (AWS_PROFILE, proxies) reaches the function.
      env: { PATH: process.env.PATH ?? "", ...env },
      encoding: "utf8",
      timeout: 60_000,
    });
    const line = r.stdout.trim().split("\n").at(-1) ?? "";
    if (r.status !== 0 || !line.startsWith("{")) {
      throw new Error(`importing ${bundle} failed (${r.status ?? r.signal}): ${r.stderr}`);
    }
    const report = JSON.parse(line) as {
      ms: number;
      cpuMs: number;
      handler: string;
      connects: string[];
      builtins: string[];
      zodInstances: number;
    };
    if (report.handler !== "function") throw new Error(`${bundle} exports no handler function`);
    samples.push(report.ms);
    cpuSamples.push(report.cpuMs);
    for (const c of report.connects) connects.add(c);
    for (const m of report.builtins) builtins.add(m);
    zodInstances = Math.max(zodInstances, report.zodInstances);
  }
  return {
    medianMs: median(samples),
    samples,
    cpuSamples,
    connects: [...connects],
    builtins: [...builtins],
    zodInstances,
  };
}

export interface BudgetRow {
  name: string;
  jsKiB: number;
  jsBudgetKiB: number | undefined;
  initMs: number;
  initBudgetMs: number | undefined;
  initSamplesMs: number[];
  /** CPU time of each import (user + system): what the wall time would be on an idle machine, roughly. */
  initCpuSamplesMs: number[];
  duplicates: { name: string; dirs: string[] }[];
  /** Connections attempted during init. */
  connects: string[];
  /** Every figure within its budget, no duplicate package, no connection during init. */
  ok: boolean;
}

/** Builds every bundle (into a temporary directory, or `outDir`), measures each one's JavaScript and module init. */
export function measureBudgets(outDir?: string, runs = INIT_RUNS): BudgetRow[] {
  const dir = outDir ?? mkdtempSync(join(tmpdir(), "hangar-budgets-"));
  try {
    return measureBuilt(buildBundles(dir), runs);
  } finally {
    if (!outDir) rmSync(dir, { recursive: true, force: true });
  }
}

function measureBuilt(bundles: BuiltBundle[], runs: number): BudgetRow[] {
  return bundles.map((b) => {
    const budget = BUDGETS[b.name];
    const jsKiB = jsBytes(b.metafile) / KiB;
    const init = measureInit(b.bundle, initEnv(b.name), runs);
    const duplicates = duplicatePackages(b.metafile);
    return {
      name: b.name,
      jsKiB,
      jsBudgetKiB: budget?.jsKiB,
      initMs: init.medianMs,
      initBudgetMs: budget?.initMs,
      initSamplesMs: init.samples,
      initCpuSamplesMs: init.cpuSamples,
      duplicates,
      connects: init.connects,
      ok:
        (budget === undefined || jsKiB <= budget.jsKiB) &&
        (budget?.initMs === undefined || init.medianMs <= budget.initMs) &&
        duplicates.length === 0 &&
        init.connects.length === 0,
    };
  });
}

/** Why a row is not ok, one line per finding. */
export function budgetFindings(rows: BudgetRow[]): string[] {
  return rows.flatMap((r) => [
    ...(r.jsBudgetKiB !== undefined && r.jsKiB > r.jsBudgetKiB
      ? [`${r.name}: ${r.jsKiB.toFixed(1)} KiB of JavaScript, budget ${r.jsBudgetKiB} KiB`]
      : []),
    ...(r.initBudgetMs !== undefined && r.initMs > r.initBudgetMs
      ? [`${r.name}: module init ${r.initMs.toFixed(1)} ms (median), budget ${r.initBudgetMs} ms`]
      : []),
    ...r.duplicates.map((d) => `${r.name}: ${d.name} twice, in ${d.dirs.join(" and ")}`),
    ...r.connects.map((c) => `${r.name}: connected to ${c} while importing`),
  ]);
}

/** The printed table: function, JS KiB, budget, init ms (median), budget. */
export function budgetTable(rows: BudgetRow[]): Record<string, Record<string, string>> {
  const or = (x: number | undefined, f: (x: number) => string) => (x === undefined ? "-" : f(x));
  return Object.fromEntries(
    rows.map((r) => [
      r.name,
      {
        "JS KiB": r.jsKiB.toFixed(0),
        "budget KiB": or(r.jsBudgetKiB, String),
        [`init ms (median of ${r.initSamplesMs.length})`]: r.initMs.toFixed(1),
        "budget ms": or(r.initBudgetMs, String),
        "init CPU ms": median(r.initCpuSamplesMs).toFixed(1),
        ok: r.ok ? "yes" : "NO",
      },
    ]),
  );
}

/** The vCPUs init series are pinned to (`taskset -c`), one run on each: this machine's two can differ in speed. */
export function pinnedVcpus(): number[] {
  return cpus().length >= 2 ? [0, 1] : [0];
}

/** The three load averages, as printed beside init series. */
export function loadAverageText(): string {
  return loadavg()
    .map((x) => x.toFixed(2))
    .join(" ");
}
