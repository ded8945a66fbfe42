import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { DYNAMODB_LOCAL_DB_FILE, useWriteAheadLog } from "./dynamodb-file.ts";
import { LocalStackError, PortInUseError, ServiceExitedError } from "./errors.ts";

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One child process of the local stack. */
export interface ServiceHandle {
  readonly name: string;
  readonly pid: number;
  /** Resolves when the process has exited, for whatever reason. */
  readonly exited: Promise<ExitInfo>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
  /** The last lines the process printed, for error messages. */
  tail(): string;
}

export interface SpawnServiceOptions {
  name: string;
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
  /** Receives each line the child prints (stdout and stderr). */
  onOutput?: (line: string) => void;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * Kills every child still alive when this process exits, whatever the reason (normal exit, uncaught
 * error, a signal handler calling process.exit). Only synchronous work is possible here, hence SIGKILL.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of live) child.kill("SIGKILL");
  });
}

const TAIL_LINES = 30;

/** Starts a child in this process group, so a terminal's Ctrl-C or a group kill reaches it too. */
export function spawnService(opts: SpawnServiceOptions): ServiceHandle {
  installExitHook();
  const child = spawn(opts.command, opts.args, {
    cwd: opts.cwd,
    env: opts.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const onChunk = (() => {
    let partial = "";
    return (chunk: string) => {
      const parts = (partial + chunk).split("\n");
      partial = parts.pop() ?? "";
      // A child that prints a very long line without a newline must not grow memory without bound.
      if (partial.length > 8192) {
        parts.push(partial);
        partial = "";
      }
      for (const line of parts) {
        lines.push(line);
        if (lines.length > TAIL_LINES) lines.shift();
        opts.onOutput?.(line);
      }
    };
  })();
  child.stdout?.setEncoding("utf8").on("data", onChunk);
  child.stderr?.setEncoding("utf8").on("data", onChunk);

  const exited = new Promise<ExitInfo>((resolve) => {
    child.once("error", (err) => {
      lines.push(`failed to start ${opts.command}: ${err.message}`);
      live.delete(child);
      resolve({ code: null, signal: null });
    });
    child.once("exit", (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  if (child.pid !== undefined) live.add(child);

  return {
    name: opts.name,
    pid: child.pid ?? -1,
    exited,
    tail: () => lines.filter((l) => l.trim() !== "").join("\n"),
    async stop(graceMs = 5000) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/**
 * Fails with a message naming the variable to change when `port` cannot be bound on `host`.
 * Checked before any child starts, because a child that loses the race only says so in its own log.
 */
export async function assertPortFree(
  port: number,
  host: string,
  what: string,
  envVar?: string,
): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) => {
      const hint = envVar ? `; stop whatever uses it or set ${envVar} to another port` : "";
      if (err.code === "EADDRINUSE" || err.code === "EACCES") {
        reject(
          new PortInUseError(`port ${port} (${what}) is already in use on ${host}${hint}`, { cause: err }),
        );
      } else {
        reject(
          new LocalStackError(`cannot bind ${host}:${port} for ${what}: ${err.message}`, { cause: err }),
        );
      }
    });
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve()));
  });
}

/** A port the kernel says is free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen({ port: 0, host: "127.0.0.1" }, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Polls `probe` every `intervalMs` until it returns true. Fails early if the service exits meanwhile,
 * and after `timeoutMs` with the service's last output in the message.
 */
export async function waitUntilReady(
  service: ServiceHandle,
  probe: () => Promise<boolean>,
  opts: { timeoutMs: number; intervalMs?: number; signal?: AbortSignal },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  let exitInfo: ExitInfo | undefined;
  void service.exited.then((info) => {
    exitInfo = info;
  });
  for (;;) {
    opts.signal?.throwIfAborted();
    if (exitInfo) throw exitedError(service, exitInfo, "while starting");
    if (await probe().catch(() => false)) return;
    if (exitInfo) throw exitedError(service, exitInfo, "while starting");
    if (Date.now() > deadline) {
      throw new LocalStackError(
        `${service.name} was not ready after ${Math.round(opts.timeoutMs / 1000)} s${lastLines(service)}`,
      );
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 100));
  }
}

/** The error for a child that exited when it should not have. */
export function exitedError(service: ServiceHandle, info: ExitInfo, when: string): ServiceExitedError {
  const how = info.signal ? `signal ${info.signal}` : `code ${info.code}`;
  return new ServiceExitedError(`${service.name} exited unexpectedly ${when} (${how})${lastLines(service)}`);
}

function lastLines(service: ServiceHandle): string {
  const tail = service.tail().split("\n").slice(-5).join(" | ").trim();
  return tail ? `: ${tail}` : "";
}

export interface MinioOptions {
  bin: string;
  dataDir: string;
  port: number;
  consolePort: number;
  rootUser: string;
  rootPassword: string;
  /**
   * Without `queueDir`, one target (`HANGAR`) delivers each event at once, and drops it if the receiver
   * does not answer. With it, that target writes each event to disk first and delivers it even if the
   * receiver was down, but MinIO replays its on-disk store only every 3 s (hard-coded, no setting), which
   * would add 0-3 s to every import; so a second target (`HANGARNOW`, see `webhookTargets`) sends the same
   * events at once, and the receiver queues whichever copy of an event comes first.
   */
  webhook: { endpoint: string; authToken: string; queueDir?: string };
  /**
   * Origins whose pages may send requests to storage (the browser page's PUTs): MinIO answers their
   * CORS preflights and exposes `ETag`, as the S3 bucket's CorsConfiguration does in AWS.
   */
  corsOrigins: readonly string[];
  onOutput?: (line: string) => void;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Starts MinIO on loopback with Hangar's webhook notification target (`arn:minio:sqs::HANGAR:webhook`)
 * configured through the environment, and resolves once `/minio/health/ready` answers 200.
 */
export async function startMinio(opts: MinioOptions): Promise<ServiceHandle> {
  const service = spawnService({
    name: "MinIO",
    command: opts.bin,
    args: [
      "server",
      opts.dataDir,
      "--address",
      `127.0.0.1:${opts.port}`,
      "--console-address",
      `127.0.0.1:${opts.consolePort}`,
      "--quiet",
    ],
    env: {
      ...baseChildEnv(),
      MINIO_ROOT_USER: opts.rootUser,
      MINIO_ROOT_PASSWORD: opts.rootPassword,
      // Loopback only, no network beyond it: never phone home for updates.
      MINIO_UPDATE: "off",
      ...webhookEnv(opts.webhook),
      // MinIO's default is every origin; the page's own is enough.
      MINIO_API_CORS_ALLOW_ORIGIN: opts.corsOrigins.join(","),
    },
    ...(opts.onOutput ? { onOutput: opts.onOutput } : {}),
  });
  const url = `http://127.0.0.1:${opts.port}/minio/health/ready`;
  await startOrStop(service, async () => (await fetch(url, { signal: AbortSignal.timeout(2000) })).ok, opts);
  return service;
}

/**
 * MinIO's webhook targets for Hangar's bucket events, by the suffix of their environment variables (their
 * ARNs are `arn:minio:sqs::<id>:webhook`): `HANGAR`, queued on disk when `durable`; and with it `HANGARNOW`,
 * which delivers at once, because MinIO replays a queued target only on a 3-second tick.
 */
export function webhookTargets(durable: boolean): { id: string; queued: boolean }[] {
  return durable
    ? [
        { id: "HANGAR", queued: true },
        { id: "HANGARNOW", queued: false },
      ]
    : [{ id: "HANGAR", queued: false }];
}

function webhookEnv(webhook: MinioOptions["webhook"]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { id, queued } of webhookTargets(webhook.queueDir !== undefined)) {
    env[`MINIO_NOTIFY_WEBHOOK_ENABLE_${id}`] = "on";
    env[`MINIO_NOTIFY_WEBHOOK_ENDPOINT_${id}`] = webhook.endpoint;
    env[`MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_${id}`] = webhook.authToken;
    // Events wait on disk while the receiver is down and are delivered when it is back.
    if (queued && webhook.queueDir) env[`MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_${id}`] = webhook.queueDir;
  }
  return env;
}

export interface DynamoDbLocalOptions {
  java: string;
  jar: string;
  libDir: string;
  dbPath: string;
  port: number;
  onOutput?: (line: string) => void;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Starts DynamoDB Local with a shared database file under `dbPath` and resolves once it answers HTTP.
 * DynamoDB Local 1.25 has no option to choose its bind address: it listens on all interfaces.
 * The file keeps a write-ahead log (`useWriteAheadLog`): a create's transaction then costs DynamoDB Local
 * about 30 % less CPU than with SQLite's default rollback journal (docs/performance.md, "API").
 */
export async function startDynamoDbLocal(opts: DynamoDbLocalOptions): Promise<ServiceHandle> {
  await useWriteAheadLog(join(opts.dbPath, DYNAMODB_LOCAL_DB_FILE));
  const service = spawnService({
    name: "DynamoDB Local",
    command: opts.java,
    args: [
      // Start-up time matters more than peak speed for a local emulator on a 2-core machine.
      "-XX:TieredStopAtLevel=1",
      "-Xshare:auto",
      `-Djava.library.path=${opts.libDir}`,
      "-jar",
      opts.jar,
      "-sharedDb",
      "-dbPath",
      opts.dbPath,
      "-port",
      String(opts.port),
      "-disableTelemetry",
    ],
    cwd: opts.dbPath,
    env: baseChildEnv(),
    ...(opts.onOutput ? { onOutput: opts.onOutput } : {}),
  });
  const url = `http://127.0.0.1:${opts.port}/`;
  await startOrStop(
    service,
    async () => {
      // Any HTTP answer (400 for an unsigned request) proves the server is accepting requests.
      const res = await fetch(url, {
        method: "POST",
        headers: {
          "x-amz-target": "DynamoDB_20120810.ListTables",
          "content-type": "application/x-amz-json-1.0",
        },
        body: "{}",
        signal: AbortSignal.timeout(2000),
      });
      await res.arrayBuffer();
      return true;
    },
    opts,
  );
  return service;
}

async function startOrStop(
  service: ServiceHandle,
  probe: () => Promise<boolean>,
  opts: { timeoutMs?: number; signal?: AbortSignal },
): Promise<void> {
  try {
    await waitUntilReady(service, probe, {
      timeoutMs: opts.timeoutMs ?? 60_000,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (err) {
    await service.stop(2000);
    throw err;
  }
}

/** Children get only what they need from our environment: no AWS credentials, no npm settings. */
function baseChildEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const key of ["PATH", "HOME", "LANG", "TMPDIR", "JAVA_HOME"]) {
    const value = process.env[key];
    if (value !== undefined) env[key] = value;
  }
  return env;
}

/**
 * Watches a set of children: `done` rejects with a clear message as soon as one exits on its own,
 * after stopping the others; it resolves once `stop()` has brought all of them down.
 */
export class ServiceGroup {
  readonly done: Promise<void>;
  private readonly services: ServiceHandle[] = [];
  private stopping: Promise<void> | undefined;
  private settle!: { resolve: () => void; reject: (err: Error) => void };

  constructor() {
    this.done = new Promise<void>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // A caller that never awaits `done` must not get an unhandled rejection.
    this.done.catch(() => {});
  }

  add(service: ServiceHandle): void {
    this.services.push(service);
    void service.exited.then(async (info) => {
      if (this.stopping) return;
      const err = exitedError(service, info, "while the stack was running");
      await this.stopAll();
      this.settle.reject(err);
    });
  }

  /** Stops every child (in reverse start order) and resolves `done`. */
  async stop(graceMs = 5000): Promise<void> {
    await this.stopAll(graceMs);
    this.settle.resolve();
  }

  get pids(): { name: string; pid: number }[] {
    return this.services.map((s) => ({ name: s.name, pid: s.pid }));
  }

  private stopAll(graceMs = 5000): Promise<void> {
    this.stopping ??= (async () => {
      await Promise.all([...this.services].reverse().map((s) => s.stop(graceMs)));
    })();
    return this.stopping;
  }
}

/**
 * Kills children left behind by an earlier run that was killed too hard to clean up (SIGKILL, power loss).
 * A pid is only touched when its command line still contains `marker` (the stack's home folder), so a
 * recycled pid belonging to something else is left alone.
 */
export async function killStaleChildren(pids: readonly number[], marker: string): Promise<number[]> {
  const killed: number[] = [];
  for (const pid of pids) {
    let cmdline: string;
    try {
      cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).replaceAll("\0", " ");
    } catch {
      continue;
    }
    if (!cmdline.includes(marker)) continue;
    try {
      process.kill(pid, "SIGKILL");
      killed.push(pid);
    } catch {
      // Already gone.
    }
  }
  // SIGKILL is asynchronous: their ports are only free once the processes are really gone.
  const deadline = Date.now() + 5000;
  while (killed.some(isRunning) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return killed;
}

/** True while `pid` exists and is not a zombie (a zombie holds no sockets). */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The state letter follows the parenthesised command name, which may itself contain spaces.
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}
