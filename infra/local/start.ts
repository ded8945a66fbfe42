/**
 * `npm start`: runs Hangar's local stack in the foreground until Ctrl-C.
 * Environment: HANGAR_HOME (default <repo>/.hangar), HANGAR_CACHE, HANGAR_API_PORT (9292),
 * HANGAR_S3_PORT (9000), HANGAR_DYNAMODB_PORT (8000), HANGAR_LOCAL_VERBOSE=1, HANGAR_LOCAL_SWEEP_SECONDS
 * (3600; 0 never), HANGAR_LOCAL_REDRIVE_SECONDS (60; 0 never). Flag: --reset.
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { LocalStack } from "./stack.ts";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

function port(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new Error(`${name}=${raw} is not a port number (1-65535)`);
  }
  return value;
}

function seconds(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0)
    throw new Error(`${name}=${raw} is not a whole number of seconds`);
  return value;
}

function line(text: string): void {
  process.stdout.write(`${text}\n`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a !== "--reset");
  if (unknown.length > 0)
    throw new Error(`unknown argument ${unknown.join(" ")} (only --reset is understood)`);
  const home = resolve(process.env.HANGAR_HOME || join(repoRoot, ".hangar"));
  const cacheDir = process.env.HANGAR_CACHE ? resolve(process.env.HANGAR_CACHE) : join(home, "cache");
  const apiPort = port("HANGAR_API_PORT", 9292);
  const s3Port = port("HANGAR_S3_PORT", 9000);
  const dynamodbPort = port("HANGAR_DYNAMODB_PORT", 8000);

  // Imported here so that a module that fails to load is reported as one line like any other error.
  const { startStack } = await import("./stack.ts");
  let stack: LocalStack | undefined;
  let stoppingSince: number | undefined;
  // A signal during start-up exits at once: the children are killed by the exit hook in services.ts.
  const shutdown = (signal: NodeJS.Signals) => {
    if (stoppingSince !== undefined) {
      // A terminal's Ctrl-C reaches us twice (directly, and relayed by tsx's parent process); only a
      // deliberate second Ctrl-C, later on, skips the orderly stop.
      if (Date.now() - stoppingSince < 1500) return;
      line(`${signal} again: exiting without waiting`);
      process.exit(1);
    }
    stoppingSince = Date.now();
    line("stopping Hangar's local stack...");
    void (stack?.stop() ?? Promise.resolve()).then(
      () => process.exit(0),
      (err: unknown) => {
        line(`error while stopping: ${message(err)}`);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", shutdown);
  process.on("SIGTERM", shutdown);
  process.on("SIGHUP", shutdown);

  stack = await startStack({
    home,
    cacheDir,
    apiPort,
    s3Port,
    dynamodbPort,
    reset: args.includes("--reset"),
    log: (l) => line(l),
    verboseChildren: process.env.HANGAR_LOCAL_VERBOSE === "1",
    sweepIntervalMs: seconds("HANGAR_LOCAL_SWEEP_SECONDS", 3600) * 1000,
    redriveIntervalMs: seconds("HANGAR_LOCAL_REDRIVE_SECONDS", 60) * 1000,
  });
  line(`Hangar is ready: API ${stack.info.apiUrl} — endpoints and demo tokens in ${stack.infoFile}`);
  try {
    await stack.done;
  } catch (err) {
    process.stderr.write(`Hangar's local stack stopped: ${message(err)}\n`);
    process.exit(1);
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

main().catch((err: unknown) => {
  process.stderr.write(`Hangar's local stack could not run: ${message(err)}\n`);
  process.exit(1);
});
