import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  AsyncInvoker,
  type FailedInvocation,
  type Invokable,
} from "../../../infra/local/lambda/async-invoker.ts";
import { InvocationError } from "../../../infra/local/lambda/runtime.ts";

const homes: string[] = [];
afterEach(async () => {
  await Promise.all(homes.splice(0).map((h) => rm(h, { recursive: true, force: true })));
});

/** A function that fails its first `failures` invocations, recording every event it is given. */
function flaky(failures: number, maximumRetryAttempts: number): Invokable & { seen: unknown[] } {
  const seen: unknown[] = [];
  return {
    seen,
    maximumRetryAttempts,
    async invoke(event) {
      seen.push(event);
      if (seen.length <= failures)
        throw new InvocationError({ errorType: "Error", errorMessage: `boom ${seen.length}` }, "r");
      return { ok: seen.length };
    },
  };
}

async function setup(fns: Record<string, Invokable>) {
  const home = await mkdtemp(join(tmpdir(), "hangar-invoker-"));
  homes.push(home);
  const lines: string[] = [];
  const invoker = new AsyncInvoker({
    queueDir: join(home, "queue"),
    failedDir: join(home, "failed"),
    functions: new Map(Object.entries(fns)),
    retryDelaysMs: [5, 10],
    log: (l) => lines.push(l),
  });
  await invoker.start();
  const until = async (text: string) => {
    const deadline = Date.now() + 5000;
    while (!lines.some((l) => l.includes(text))) {
      if (Date.now() > deadline) throw new Error(`no line with ${text}: ${lines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  return { home, invoker, lines, until };
}

describe("AsyncInvoker (Lambda's asynchronous invocation, locally)", () => {
  it("has the event on disk when enqueue returns, and removes it once the function succeeded", async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const fn: Invokable = { maximumRetryAttempts: 2, invoke: async () => gate };
    const { home, invoker, until } = await setup({ f: fn });
    await invoker.enqueue("f", { n: 1 });
    const queued = await readdir(join(home, "queue"));
    expect(queued).toHaveLength(1);
    expect(JSON.parse(await readFile(join(home, "queue", queued[0] ?? ""), "utf8"))).toMatchObject({
      functionName: "f",
      event: { n: 1 },
      attempts: [],
    });
    release();
    await until("async invocation handled: f");
    expect(await readdir(join(home, "queue"))).toEqual([]);
  });

  it("retries a failed invocation maximumRetryAttempts times, then writes the failure destination", async () => {
    const twice = flaky(2, 2);
    const always = flaky(99, 2);
    const never = flaky(99, 0);
    const { home, invoker, lines, until } = await setup({ twice, always, never });
    await invoker.enqueue("twice", "a");
    await invoker.enqueue("always", "b");
    await invoker.enqueue("never", "c");
    await until("async invocation handled: twice");
    await until("async invocation failed: always");
    await until("async invocation failed: never");
    await until("(attempt 3 of 3); sent to the failure destination");
    expect(twice.seen).toEqual(["a", "a", "a"]);
    expect(always.seen).toEqual(["b", "b", "b"]);
    // maximumRetryAttempts 0 (web-download): straight to the failure destination.
    expect(never.seen).toEqual(["c"]);
    expect(
      lines.some(
        (l) => l.includes("never") && l.includes("(attempt 1 of 1); sent to the failure destination"),
      ),
    ).toBe(true);
    const files = (await readdir(join(home, "failed"))).sort();
    expect(files).toHaveLength(2);
    const failed = await Promise.all(
      files.map(async (f) => JSON.parse(await readFile(join(home, "failed", f), "utf8")) as FailedInvocation),
    );
    const alwaysFailed = failed.find((f) => f.functionName === "always");
    expect(alwaysFailed?.event).toBe("b");
    expect(alwaysFailed?.attempts.map((a) => a.error.errorMessage)).toEqual(["boom 1", "boom 2", "boom 3"]);
    const line =
      lines.find((l) => l.includes("always") && l.includes("sent to the failure destination")) ?? "";
    expect(line).toContain(`npm run replay -- ${join(home, "failed", `always-${alwaysFailed?.id}.json`)}`);
    expect(await readdir(join(home, "queue"))).toEqual([]);
  });

  it("delivers at start what an earlier run left queued, and refuses unknown functions", async () => {
    const home = await mkdtemp(join(tmpdir(), "hangar-invoker-"));
    homes.push(home);
    await mkdir(join(home, "queue"), { recursive: true });
    await writeFile(
      join(home, "queue", "000000000000001-x.json"),
      JSON.stringify({ id: "x", functionName: "f", event: "left", queuedAt: "", attempts: [] }),
    );
    const f = flaky(0, 2);
    const lines: string[] = [];
    const invoker = new AsyncInvoker({
      queueDir: join(home, "queue"),
      failedDir: join(home, "failed"),
      functions: new Map([["f", f]]),
      retryDelaysMs: [5],
      log: (l) => lines.push(l),
    });
    await invoker.start();
    await invoker.stop(5000);
    expect(f.seen).toEqual(["left"]);
    expect(lines.some((l) => l.includes("redelivered after a restart"))).toBe(true);
    await expect(
      new AsyncInvoker({ ...invokerOptions(home), functions: new Map() }).enqueue("g", {}),
    ).rejects.toThrow(/Function not found: g/);
  });
});

function invokerOptions(home: string) {
  return {
    queueDir: join(home, "queue"),
    failedDir: join(home, "failed"),
    retryDelaysMs: [5],
    log: () => {},
  };
}
