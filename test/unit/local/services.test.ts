import { describe, expect, it } from "vitest";
import { ServiceExitedError } from "../../../infra/local/errors.ts";
import { ServiceGroup, spawnService } from "../../../infra/local/services.ts";

// Children are tiny `node -e` scripts: real processes, no network.
const node = process.execPath;
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("ServiceGroup", () => {
  it("rejects `done` with the child's name, exit code and last output when one dies, and stops the others", async () => {
    const group = new ServiceGroup();
    const sleeper = spawnService({
      name: "Sleeper",
      command: node,
      args: ["-e", "setInterval(() => {}, 1000)"],
      env: {},
    });
    const crasher = spawnService({
      name: "Crasher",
      command: node,
      args: ["-e", "setTimeout(() => { console.error('disk full'); process.exit(3); }, 200)"],
      env: {},
    });
    group.add(sleeper);
    group.add(crasher);
    const err = await group.done.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ServiceExitedError);
    expect(String((err as Error).message)).toMatch(/Crasher exited unexpectedly .*code 3.*disk full/);
    expect(alive(sleeper.pid)).toBe(false);
  });

  it("stop() resolves `done` and kills a child that ignores SIGTERM once the grace period is over", async () => {
    const group = new ServiceGroup();
    const stubborn = spawnService({
      name: "Stubborn",
      command: node,
      args: ["-e", "process.on('SIGTERM', () => {}); console.log('up'); setInterval(() => {}, 1000)"],
      env: {},
    });
    group.add(stubborn);
    // Wait until it has installed its SIGTERM handler.
    while (!stubborn.tail().includes("up")) await new Promise((r) => setTimeout(r, 20));
    const started = Date.now();
    await group.stop(300);
    await expect(group.done).resolves.toBeUndefined();
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect((await stubborn.exited).signal).toBe("SIGKILL");
    expect(alive(stubborn.pid)).toBe(false);
  });
});
