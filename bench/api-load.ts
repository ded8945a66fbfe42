/**
 * The API under load (`BENCH_ONLY=api`, or `npx tsx bench/api-load.ts` alone): a local stack of its own,
 * started as `npm start` starts it (the built api handler in its runtime child, behind the local API
 * Gateway stand-in, DynamoDB Local and MinIO), then autocannon with 10 connections for 15 s against
 *  - create: `POST /v2/images`, each request a new image (of a bench project whose limits are lifted);
 *  - show:   `GET /v2/images/{id}` of one image.
 * Before measuring, it waits (at most BENCH_API_SETTLE_SECONDS) for the machine to settle: until the CPU
 * that other processes keep busy falls below half a core, so a run that follows the bench's heavy parts
 * does not start while their work still drains. Each route then gets a warm-up of
 * BENCH_API_WARMUP_SECONDS (the first requests compile the route's code in Node and in DynamoDB Local's
 * JVM and open the connections), not measured, and the measured run.
 * Prints requests per second and p99 latency beside the targets, the CPU each process spent per request
 * (the api function's runtime, DynamoDB Local, this process, which holds the gateway and EventBridge
 * stand-ins, and autocannon, which runs in a child process of its own), and the CPU the rest of the
 * machine used meanwhile, in cores: what the run shared the machine with.
 *
 * Environment: HANGAR_CACHE (MinIO and DynamoDB Local binaries), BENCH_API_SECONDS (15),
 * BENCH_API_CONNECTIONS (10), BENCH_API_WARMUP_SECONDS (5), BENCH_API_SETTLE_SECONDS (60; 0 does not
 * wait), BENCH_API_ROUTES (`create,show`), BENCH_API_PROFILE=<dir> (the api runtime writes a V8 CPU
 * profile of the whole run there, as `--cpu-prof` would; Node does not take that flag in NODE_OPTIONS).
 */
import { fork } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../infra/local/services.ts";
import { type LocalStack, startStack } from "../infra/local/stack.ts";
import { signToken } from "../infra/local/tokens.ts";

interface Histogram {
  average: number;
  p50: number;
  p99: number;
  max: number;
}
interface CannonResult {
  requests: Histogram & { total: number };
  latency: Histogram;
  duration: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodeStats: Record<string, { count: number }>;
}
type Cannon = (options: Record<string, unknown>) => Promise<CannonResult>;

/**
 * A child process (this module, started with `--cannon`) ready to run autocannon once, so its CPU is its
 * own and not the gateway stand-in's: resolves, once the child has loaded, with the function that runs
 * it with `options` and resolves with its result and the CPU milliseconds the run spent.
 */
async function cannonProcess(): Promise<
  (options: Record<string, unknown>) => Promise<{ out: CannonResult; cpuMs: number }>
> {
  const child = fork(fileURLToPath(import.meta.url), ["--cannon"], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const exited = new Promise<never>((_, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`autocannon's process exited (${code}) without a result`)));
  });
  const message = <T>() => Promise.race([new Promise<T>((r) => child.once("message", r)), exited]);
  await message<{ ready: true }>();
  return (options) => {
    const result = message<{ out: CannonResult; cpuMs: number }>();
    child.send(options);
    return result;
  };
}

export interface ApiLoadRow {
  route: "create" | "show";
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  /** Answers other than the route's success status, and connection errors. */
  failures: number;
  /**
   * CPU milliseconds per request of the api function's runtime, DynamoDB Local, this process (the gateway
   * and EventBridge stand-ins) and autocannon's process.
   */
  cpuMsPerRequest: { api: number; dynamodb: number; stack: number; autocannon: number };
  /** Cores the rest of the machine kept busy during the measured run (all CPU time less the four above). */
  otherCores: number;
  target: { reqPerSec: number; p99Ms: number };
  met: boolean;
}

export interface ApiLoadResult {
  rows: ApiLoadRow[];
  seconds: number;
  connections: number;
  warmupSeconds: number;
  /** Seconds waited for the machine to settle, and the cores others kept busy when the wait ended. */
  settle: { waitedSeconds: number; otherCores: number };
  load: { before: number[]; after: number[] };
  cores: number;
}

const TARGETS = {
  create: { reqPerSec: 200, p99Ms: 100 },
  show: { reqPerSec: 1000, p99Ms: 50 },
} as const;

/** User + system CPU seconds of a process so far, from /proc (Linux). */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 per second on Linux).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/**
 * CPU seconds the machine's processes have spent (all cores; not idle, waiting for I/O, or stolen by the
 * hypervisor), from /proc/stat.
 */
function machineBusySeconds(): number {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0] = fields.map(Number);
  return (user + nice + system + irq + softirq) / 100;
}

/**
 * Waits until the processes other than `ours` keep less than half a core busy over two seconds, or
 * `maxSeconds` pass; returns the seconds waited and the cores the others used in the last two seconds.
 */
async function settle(
  ours: () => number,
  maxSeconds: number,
): Promise<{ waitedSeconds: number; otherCores: number }> {
  const started = performance.now();
  for (;;) {
    const [busy0, ours0] = [machineBusySeconds(), ours()];
    await new Promise((r) => setTimeout(r, 2000));
    const otherCores = (machineBusySeconds() - busy0 - (ours() - ours0)) / 2;
    const waitedSeconds = (performance.now() - started) / 1000;
    if (otherCores < 0.5 || waitedSeconds >= maxSeconds) return { waitedSeconds, otherCores };
  }
}

/** The pids of the stack's DynamoDB Local and MinIO, from `<home>/children.json` and their command lines. */
function servicePids(home: string): { dynamodb?: number; minio?: number } {
  const out: { dynamodb?: number; minio?: number } = {};
  const entries = JSON.parse(readFileSync(join(home, "children.json"), "utf8")) as { pid?: number }[];
  for (const { pid } of entries) {
    if (typeof pid !== "number") continue;
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (/dynamodb/i.test(cmd)) out.dynamodb = pid;
    else if (/minio/i.test(cmd)) out.minio = pid;
  }
  return out;
}

export async function measureApiLoad(options: {
  repoRoot: string;
  log: (line: string) => void;
  seconds?: number;
  connections?: number;
}): Promise<ApiLoadResult> {
  const seconds = options.seconds ?? Number(process.env.BENCH_API_SECONDS ?? 15);
  const connections = options.connections ?? Number(process.env.BENCH_API_CONNECTIONS ?? 10);
  const warmupSeconds = Number(process.env.BENCH_API_WARMUP_SECONDS ?? 5);
  const settleSeconds = Number(process.env.BENCH_API_SETTLE_SECONDS ?? 60);
  const home = await mkdtemp(join(tmpdir(), "hangar-bench-api-"));
  const ports = new Set<number>();
  while (ports.size < 3) ports.add(await freePort());
  const [apiPort = 0, s3Port = 0, dynamodbPort = 0] = [...ports];
  const profileDir = process.env.BENCH_API_PROFILE ? resolve(process.env.BENCH_API_PROFILE) : undefined;
  const functionEnv: Record<string, string> = {};
  if (profileDir) {
    // Node refuses --cpu-prof in NODE_OPTIONS: a preload profiles through the inspector instead, and
    // writes the profile when the runtime is stopped (SIGTERM).
    const preload = join(home, "cpu-profile.mjs");
    writeFileSync(
      preload,
      `import { Session } from "node:inspector";
import { mkdirSync, writeFileSync } from "node:fs";
const session = new Session();
session.connect();
session.post("Profiler.enable", () => session.post("Profiler.start"));
process.on("SIGTERM", () => {
  session.post("Profiler.stop", (err, out) => {
    if (!err) {
      mkdirSync(${JSON.stringify(profileDir)}, { recursive: true });
      writeFileSync(${JSON.stringify(profileDir)} + "/api-" + process.pid + ".cpuprofile", JSON.stringify(out.profile));
    }
    process.exit(0);
  });
});
`,
    );
    functionEnv.NODE_OPTIONS = `--import=${preload}`;
  }
  let stack: LocalStack | undefined;
  const stackLog: string[] = [];
  try {
    stack = await startStack({
      home,
      cacheDir: resolve(process.env.HANGAR_CACHE ?? join(options.repoRoot, ".hangar", "cache")),
      apiPort,
      s3Port,
      dynamodbPort,
      reset: true,
      sweepIntervalMs: 0,
      redriveIntervalMs: 0,
      functionEnv: { api: functionEnv },
      // Only the last lines are shown on a failure: the run's 30,000 or so are not kept.
      log: (line) => {
        if (stackLog.push(line) > 400) stackLog.splice(0, 200);
      },
    });
    const info = stack.info;
    const project = "bench-api";
    const token = await signToken(stack.signingKey, {
      sub: "bench",
      project_id: project,
      roles: ["member"],
    });
    const base = info.apiUrl.replace(/\/$/, "");
    const call = async (path: string, init: RequestInit, as = token) => {
      const res = await fetch(`${base}${path}`, {
        ...init,
        headers: { "x-auth-token": as, "content-type": "application/json" },
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`${init.method ?? "GET"} ${path}: ${res.status} ${text}`);
      return text ? (JSON.parse(text) as Record<string, unknown>) : {};
    };
    // Every create holds an image: the bench project may hold as many as the run makes.
    await call(
      `/v2/quotas/${project}`,
      {
        method: "PUT",
        body: JSON.stringify({
          image_count_total: -1,
          image_count_uploading: -1,
          image_stage_total: -1,
          image_size_total: -1,
        }),
      },
      info.tokens.admin,
    );
    const createBody = JSON.stringify({ name: "bench", disk_format: "raw", container_format: "bare" });
    const shown = String((await call("/v2/images", { method: "POST", body: createBody })).id);
    const apiPid = stack.lambda.fn("api").pid;
    const { dynamodb: dynamoPid, minio: minioPid } = servicePids(home);
    const headers = { "x-auth-token": token, "content-type": "application/json" };
    const routes = [
      { route: "create" as const, method: "POST", path: "/v2/images", body: createBody, status: "201" },
      { route: "show" as const, method: "GET", path: `/v2/images/${shown}`, body: undefined, status: "200" },
    ];
    const only = process.env.BENCH_API_ROUTES?.split(",");
    const processes = () =>
      cpuSeconds(process.pid) + cpuSeconds(apiPid) + cpuSeconds(dynamoPid) + cpuSeconds(minioPid);
    const settled = await settle(processes, settleSeconds);
    options.log(
      `api load: machine settled after ${settled.waitedSeconds.toFixed(0)} s (others ${settled.otherCores.toFixed(2)} cores)`,
    );
    const before = loadavg();
    const rows: ApiLoadRow[] = [];
    for (const r of routes.filter((x) => !only || only.includes(x.route))) {
      const load = {
        url: `${base}${r.path}`,
        method: r.method,
        headers,
        ...(r.body ? { body: r.body } : {}),
        connections,
      };
      // Not measured: the first requests compile the route's code (Node's and the JVM's) and open the connections.
      if (warmupSeconds > 0) await (await cannonProcess())({ ...load, duration: warmupSeconds });
      const measured = await cannonProcess();
      options.log(`api load: ${r.route} ${r.method} ${r.path}, ${connections} connections, ${seconds} s`);
      const cpu0 = { api: cpuSeconds(apiPid), dynamodb: cpuSeconds(dynamoPid), stack: process.cpuUsage() };
      const [busy0, ours0, wall0] = [machineBusySeconds(), processes(), performance.now()];
      const { out, cpuMs: cannonMs } = await measured({ ...load, duration: seconds });
      const stack = process.cpuUsage(cpu0.stack);
      // Everything of ours (the cannon's run included: its process is not among `processes`).
      const ours = processes() - ours0 + cannonMs / 1000;
      const otherCores = (machineBusySeconds() - busy0 - ours) / ((performance.now() - wall0) / 1000);
      const total = out.requests.total;
      const ok = out.statusCodeStats[r.status]?.count ?? 0;
      const perRequest = (s: number) => (total > 0 ? (s * 1000) / total : 0);
      const target = TARGETS[r.route];
      const reqPerSec = total / seconds;
      rows.push({
        route: r.route,
        reqPerSec,
        p50Ms: out.latency.p50,
        p99Ms: out.latency.p99,
        requests: total,
        failures: total - ok + out.errors,
        cpuMsPerRequest: {
          api: perRequest(cpuSeconds(apiPid) - cpu0.api),
          dynamodb: perRequest(cpuSeconds(dynamoPid) - cpu0.dynamodb),
          stack: perRequest((stack.user + stack.system) / 1e6),
          autocannon: perRequest(cannonMs / 1000),
        },
        otherCores: Math.max(0, otherCores),
        target,
        met: reqPerSec >= target.reqPerSec && out.latency.p99 <= target.p99Ms && total === ok,
      });
    }
    return {
      rows,
      seconds,
      connections,
      warmupSeconds,
      settle: settled,
      load: { before, after: loadavg() },
      cores: availableParallelism(),
    };
  } catch (err) {
    options.log(`api load failed; the stack's log:\n${stackLog.slice(-40).join("\n")}`);
    throw err;
  } finally {
    await stack?.stop();
    await rm(home, { recursive: true, force: true });
  }
}

/** The rows as `npm run bench` prints them. */
export function apiLoadTable(result: ApiLoadResult) {
  return result.rows.map((r) => ({
    route: r.route,
    "req/s": Math.round(r.reqPerSec),
    "target req/s": `≥ ${r.target.reqPerSec}`,
    "p99 ms": r.p99Ms,
    "target p99": `≤ ${r.target.p99Ms}`,
    "p50 ms": r.p50Ms,
    failures: r.failures,
    "CPU ms/req api|ddb|stack|cannon": [
      r.cpuMsPerRequest.api,
      r.cpuMsPerRequest.dynamodb,
      r.cpuMsPerRequest.stack,
      r.cpuMsPerRequest.autocannon,
    ]
      .map((x) => x.toFixed(2))
      .join(" | "),
    "others' cores": r.otherCores.toFixed(2),
    met: r.met ? "yes" : "no",
  }));
}

if (process.argv[2] === "--cannon" && import.meta.url === `file://${process.argv[1]}`) {
  // The child of `cannonProcess()`: one autocannon run, its result and its CPU sent back.
  const autocannon = createRequire(import.meta.url)("autocannon") as Cannon;
  process.once("message", async (options: Record<string, unknown>) => {
    const cpu0 = process.cpuUsage();
    const out = await autocannon(options);
    const cpu = process.cpuUsage(cpu0);
    process.send?.({ out, cpuMs: (cpu.user + cpu.system) / 1000 }, () => process.exit(0));
  });
  process.send?.({ ready: true });
} else if (import.meta.url === `file://${process.argv[1]}`) {
  const started = performance.now();
  const log = (line: string) =>
    console.error(`[api-load ${((performance.now() - started) / 1000).toFixed(0)} s] ${line}`);
  const result = await measureApiLoad({ repoRoot: resolve(import.meta.dirname, ".."), log });
  console.log(
    `API under load: autocannon, ${result.connections} connections, ${result.seconds} s per route; ` +
      `load average ${result.load.before.map((x) => x.toFixed(2)).join(" ")} → ` +
      `${result.load.after.map((x) => x.toFixed(2)).join(" ")} on ${result.cores} cores; ` +
      `warm-up ${result.warmupSeconds} s per route; settled after ${result.settle.waitedSeconds.toFixed(0)} s`,
  );
  console.table(apiLoadTable(result));
}
