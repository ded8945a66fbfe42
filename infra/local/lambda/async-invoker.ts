import { randomUUID } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { InvocationError, type InvocationErrorPayload } from "./runtime.ts";

/** One asynchronous invocation waiting on disk: what Lambda's internal queue holds for a function. */
export interface QueuedInvocation {
  id: string;
  /** The function's deployed name (`hangar-local-importer`). */
  functionName: string;
  event: unknown;
  queuedAt: string;
  /** Every attempt so far, with its error. */
  attempts: { at: string; error: InvocationErrorPayload }[];
}

/** What the failure destination receives: the event, the function, and why each attempt failed. */
export interface FailedInvocation extends QueuedInvocation {
  failedAt: string;
}

export interface Invokable {
  invoke(event: unknown): Promise<unknown>;
  /** How many times a failed asynchronous invocation is retried (serverless.yml's maximumRetryAttempts). */
  maximumRetryAttempts: number;
}

export interface AsyncInvokerOptions {
  /** `<home>/async-invocations`: one JSON file per queued invocation. */
  queueDir: string;
  /** `<home>/failed-events`: the failure destination. */
  failedDir: string;
  functions: ReadonlyMap<string, Invokable>;
  /** Wait before the 1st, 2nd, ... retry (the last one repeats); AWS waits about 1 and 2 minutes. */
  retryDelaysMs: readonly number[];
  log: (line: string) => void;
  /** What the log calls an invocation: `storage event` and its object for S3 events. */
  describe?: (entry: QueuedInvocation) => { label: string; summary: string };
}

/** Not one of the stand-in's functions (the Invoke API answers 404). */
export class UnknownFunctionError extends Error {
  override name = "UnknownFunctionError";
}

/**
 * Lambda's asynchronous invocation, locally: `enqueue` writes the event durably to `queueDir` (write,
 * fsync, rename) before it returns, so whoever acknowledges its sender after that cannot lose it. Each
 * queued event is then invoked; a failure is retried `maximumRetryAttempts` times with the configured
 * delays, then written to `failedDir` with every attempt's error. Events found in the queue at start
 * (the stack stopped or crashed before they were done) are delivered again.
 */
export class AsyncInvoker {
  private readonly running = new Set<Promise<void>>();
  private readonly timers = new Set<{ timer: NodeJS.Timeout; wake: () => void }>();
  private stopping = false;

  constructor(private readonly opts: AsyncInvokerOptions) {}

  /** Creates the folders and delivers every invocation still queued from an earlier run. */
  async start(): Promise<void> {
    await mkdir(this.opts.queueDir, { recursive: true });
    await mkdir(this.opts.failedDir, { recursive: true });
    const names = (await readdir(this.opts.queueDir)).filter((n) => n.endsWith(".json")).sort();
    for (const name of names) {
      const file = join(this.opts.queueDir, name);
      let entry: QueuedInvocation;
      try {
        entry = JSON.parse(await readFile(file, "utf8")) as QueuedInvocation;
      } catch (err) {
        this.opts.log(`async invocation ${name} is unreadable, left in place: ${message(err)}`);
        continue;
      }
      const { label, summary } = this.describe(entry);
      this.opts.log(`${label} redelivered after a restart: ${summary}`);
      this.run(entry, file);
    }
  }

  /** Queues `event` for `functionName` durably and returns once it is on disk (then delivers it). */
  async enqueue(functionName: string, event: unknown): Promise<QueuedInvocation> {
    if (this.stopping) throw new Error("the local stack is stopping");
    if (!this.opts.functions.has(functionName))
      throw new UnknownFunctionError(`Function not found: ${functionName}`);
    const entry: QueuedInvocation = {
      id: randomUUID(),
      functionName,
      event,
      queuedAt: new Date().toISOString(),
      attempts: [],
    };
    // Named by time first, so a restart redelivers in arrival order.
    const file = join(this.opts.queueDir, `${Date.now().toString().padStart(15, "0")}-${entry.id}.json`);
    await writeDurably(file, entry);
    const { label, summary } = this.describe(entry);
    this.opts.log(`${label} received: ${summary}`);
    this.run(entry, file);
    return entry;
  }

  /**
   * Stops taking invocations and waits up to `timeoutMs` for those running; pending retries are not
   * waited for. Whatever is unfinished stays queued on disk and is delivered at the next start.
   */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    for (const t of this.timers) {
      clearTimeout(t.timer);
      t.wake();
    }
    if (this.running.size === 0) return;
    this.opts.log(`waiting for ${this.running.size} asynchronous invocation(s) still running`);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((r) => {
      timer = setTimeout(() => r("timeout"), timeoutMs);
    });
    const outcome = await Promise.race([Promise.allSettled([...this.running]), timedOut]);
    clearTimeout(timer);
    if (outcome === "timeout")
      this.opts.log(
        `stopping with ${this.running.size} invocation(s) unfinished; they stay queued for the next start`,
      );
  }

  private describe(entry: QueuedInvocation): { label: string; summary: string } {
    return this.opts.describe?.(entry) ?? { label: "async invocation", summary: entry.functionName };
  }

  private run(entry: QueuedInvocation, file: string): void {
    const work = this.deliver(entry, file).catch((err: unknown) =>
      this.opts.log(`async invocation ${entry.id} could not be processed: ${message(err)}`),
    );
    this.running.add(work);
    void work.finally(() => this.running.delete(work));
  }

  private async deliver(entry: QueuedInvocation, file: string): Promise<void> {
    const fn = this.opts.functions.get(entry.functionName);
    const { label, summary } = this.describe(entry);
    const total = (fn?.maximumRetryAttempts ?? 0) + 1;
    while (!this.stopping) {
      try {
        if (!fn) throw new UnknownFunctionError(`Function not found: ${entry.functionName}`);
        const result = await fn.invoke(entry.event);
        await rm(file, { force: true });
        this.opts.log(`${label} handled: ${summary}: ${JSON.stringify(result ?? null)}`);
        return;
      } catch (err) {
        const error: InvocationErrorPayload =
          err instanceof InvocationError ? err.payload : { errorType: "Error", errorMessage: message(err) };
        entry.attempts.push({
          at: new Date().toISOString(),
          error: { errorType: error.errorType, errorMessage: error.errorMessage },
        });
        const n = entry.attempts.length;
        const why = `${error.errorType}: ${error.errorMessage}`;
        if (n >= total) {
          const failed = await this.deadLetter(entry, file);
          this.opts.log(
            `${label} failed: ${summary}: ${why} (attempt ${n} of ${total}); sent to the failure destination ${failed}; replay it with: npm run replay -- ${failed}`,
          );
          return;
        }
        const delay = this.delayBefore(n);
        this.opts.log(
          `${label} failed: ${summary}: ${why} (attempt ${n} of ${total}); retrying in ${delay / 1000} s`,
        );
        await writeDurably(file, entry);
        await this.sleep(delay);
      }
    }
  }

  private delayBefore(retry: number): number {
    const delays = this.opts.retryDelaysMs;
    return delays[Math.min(retry - 1, delays.length - 1)] ?? 0;
  }

  private async deadLetter(entry: QueuedInvocation, file: string): Promise<string> {
    const failed: FailedInvocation = { ...entry, failedAt: new Date().toISOString() };
    const target = join(this.opts.failedDir, `${entry.functionName}-${entry.id}.json`);
    await writeDurably(target, failed);
    await rm(file, { force: true });
    return target;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = {
        timer: setTimeout(() => {
          this.timers.delete(t);
          resolve();
        }, ms),
        wake: resolve,
      };
      this.timers.add(t);
    });
  }
}

/** Writes `value` as JSON to `file` so that a crash leaves either the old file or the whole new one. */
export async function writeDurably(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomUUID()}.tmp`;
  const handle = await open(tmp, "w", 0o600);
  try {
    await handle.writeFile(`${JSON.stringify(value, null, 2)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
  // The rename itself is durable only once the directory is synced.
  const dir = await open(dirname(file), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
