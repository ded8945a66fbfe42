import { type ChildProcess, fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { FunctionSpec } from "./functions.ts";

const BOOTSTRAP = fileURLToPath(new URL("./bootstrap.mjs", import.meta.url));

/** Lambda's error payload (`errorType`, `errorMessage`), as the Invoke API returns it. */
export interface InvocationErrorPayload {
  errorType: string;
  errorMessage: string;
  trace?: string[];
}

/** An invocation that did not return: the handler threw, timed out, or its runtime died. */
export class InvocationError extends Error {
  override name = "InvocationError";
  constructor(
    readonly payload: InvocationErrorPayload,
    readonly requestId: string,
  ) {
    super(`${payload.errorType}: ${payload.errorMessage}`);
  }
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: InvocationError): void;
  timer: NodeJS.Timeout;
  requestId: string;
}

type ChildMessage =
  | { type: "ready" }
  | { type: "init-error"; error: InvocationErrorPayload }
  | { type: "result"; id: string; ok: true; value: unknown }
  | { type: "result"; id: string; ok: false; error: InvocationErrorPayload };

export interface LocalFunctionOptions {
  spec: FunctionSpec;
  /** The deployed name (`hangar-local-importer`). */
  name: string;
  /** The built bundle (`<dir>/<handler>/index.mjs`). */
  bundle: string;
  /** The function's whole environment: nothing of the stack's own process leaks in. */
  env: Record<string, string>;
  /** One line of the function's output (its log), or of the stand-in's own notes about it. */
  log: (line: string) => void;
}

/**
 * One Lambda function run locally: a child process (the "container") that loads the built bundle and
 * serves invocations over IPC. Concurrent invocations share the one child, where Lambda would start more
 * containers. A child that dies fails its in-flight invocations as Lambda's "Runtime exited" does, and the
 * next invocation starts a new one (a cold start); a timeout fails the invocation and restarts the child.
 */
export class LocalFunction {
  private child: ChildProcess | undefined;
  private ready: Promise<ChildProcess> | undefined;
  private readonly pending = new Map<string, Pending>();
  private stopped = false;

  constructor(private readonly opts: LocalFunctionOptions) {}

  get name(): string {
    return this.opts.name;
  }

  /** The pid of the running child, if one runs (tests check that requests reach it). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the child now rather than on the first invocation. */
  async warm(): Promise<void> {
    await this.start();
  }

  /** Runs the handler with `event`; resolves with what it returned, rejects with an `InvocationError`. */
  async invoke(event: unknown): Promise<unknown> {
    const requestId = randomUUID();
    const child = await this.start().catch((err: unknown) => {
      throw err instanceof InvocationError
        ? err
        : new InvocationError({ errorType: "Runtime.Unknown", errorMessage: String(err) }, requestId);
    });
    // The invocation's request id names its message too: it is unique already.
    const id = requestId;
    const timeoutMs = this.opts.spec.timeoutSeconds * 1000;
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settle(id, {
          ok: false,
          error: {
            errorType: "Sandbox.Timedout",
            errorMessage: `Task timed out after ${this.opts.spec.timeoutSeconds.toFixed(2)} seconds`,
          },
        });
        // Lambda does not reuse a runtime whose invocation timed out.
        this.kill(child, "SIGKILL");
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, requestId });
      child.send({ type: "invoke", id, requestId, event, deadline: Date.now() + timeoutMs }, (err) => {
        if (err)
          this.settle(id, {
            ok: false,
            error: {
              errorType: "Runtime.ExitError",
              errorMessage: `cannot reach the runtime: ${err.message}`,
            },
          });
      });
    });
  }

  /** Stops the child (SIGTERM, then SIGKILL after `graceMs`); later invocations fail. */
  async stop(graceMs = 2000): Promise<void> {
    this.stopped = true;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    this.kill(child, "SIGTERM");
    const timer = setTimeout(() => this.kill(child, "SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  }

  private start(): Promise<ChildProcess> {
    if (this.stopped) return Promise.reject(new Error(`${this.name} is stopped`));
    this.ready ??= this.spawn();
    return this.ready;
  }

  private spawn(): Promise<ChildProcess> {
    const { spec, bundle, env, log } = this.opts;
    const started = Date.now();
    const child = fork(BOOTSTRAP, [bundle, this.name, String(spec.timeoutSeconds), String(spec.memoryMb)], {
      env,
      // Not the stack's own flags (tsx's loader): the bundle is plain JavaScript, as in Lambda.
      execArgv: [],
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      serialization: "json",
    });
    this.child = child;
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) createInterface({ input: stream }).on("line", (l) => log(`[${spec.key}] ${l}`));
    }
    return new Promise<ChildProcess>((resolve, reject) => {
      let initError: InvocationErrorPayload | undefined;
      child.on("message", (message: ChildMessage) => {
        if (message.type === "ready") {
          log(`[${spec.key}] runtime started (pid ${child.pid}, init ${Date.now() - started} ms)`);
          resolve(child);
        } else if (message.type === "init-error") initError = message.error;
        else if (message.type === "result") this.settle(message.id, message);
      });
      child.once("error", (err) => {
        initError ??= { errorType: "Runtime.Unknown", errorMessage: err.message };
      });
      child.once("exit", (code, signal) => {
        if (this.child === child) {
          this.child = undefined;
          this.ready = undefined;
        }
        const status = signal ? `signal ${signal}` : `exit status ${code}`;
        const error = initError ?? {
          errorType: "Runtime.ExitError",
          errorMessage: `Runtime exited with error: ${status}`,
        };
        if (!this.stopped) log(`[${spec.key}] runtime exited (${status})`);
        reject(new InvocationError(error, "init"));
        for (const id of [...this.pending.keys()]) this.settle(id, { ok: false, error });
      });
    });
  }

  private settle(
    id: string,
    result: { ok: true; value: unknown } | { ok: false; error: InvocationErrorPayload },
  ): void {
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if (result.ok) pending.resolve(result.value);
    else pending.reject(new InvocationError(result.error, pending.requestId));
  }

  private kill(child: ChildProcess, signal: NodeJS.Signals): void {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  }
}
