import { appendFileSync, existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";
import { freePort } from "../../../infra/local/services.ts";
import { type LocalStack, startStack } from "../../../infra/local/stack.ts";
import "./context.ts";
import { TEST_FANOUT_ENV } from "./fanout-env.ts";
import { assertLoopback } from "./loopback.ts";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** Written next to the stack's log by a failing test (see log-on-failure.ts): the log is then kept. */
const FAILED_MARKER = "failed";

/**
 * Starts one local stack for the whole integration run, in a temporary HANGAR_HOME on free ports.
 * Binaries come from the repository's cache (`.hangar/cache`, or HANGAR_CACHE) so they are fetched once
 * per machine, not once per run. The stack's log goes to a file in a temporary folder of its own, kept
 * after a run in which a test failed; HANGAR_TEST_VERBOSE=1 echoes it; HANGAR_TEST_KEEP=1 keeps the
 * temporary home and the log for inspection.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cacheDir = process.env.HANGAR_CACHE
    ? resolve(process.env.HANGAR_CACHE)
    : join(repoRoot, ".hangar", "cache");
  const home = await mkdtemp(join(tmpdir(), "hangar-it-"));
  const logDir = await mkdtemp(join(tmpdir(), "hangar-it-log-"));
  const logFile = join(logDir, "stack.log");
  const verbose = process.env.HANGAR_TEST_VERBOSE === "1";
  const log = (line: string) => {
    appendFileSync(logFile, `${new Date().toISOString()} ${line}\n`);
    if (verbose) console.log(`[stack] ${line}`);
  };

  const ports = new Set<number>();
  while (ports.size < 3) ports.add(await freePort());
  const [apiPort = 0, s3Port = 0, dynamodbPort = 0] = [...ports];

  const started = Date.now();
  // The stack's receiver never goes down during a run, so MinIO's on-disk event queue (polled every 3 s)
  // would only add latency to every import; HANGAR_TEST_DURABLE_EVENTS=1 runs with it, as `npm start` does.
  const durableEvents = process.env.HANGAR_TEST_DURABLE_EVENTS === "1";
  let stack: LocalStack;
  try {
    // The stack builds the functions into <home>/functions while MinIO and DynamoDB Local start; tests
    // that start a stack of their own, and the handler tests, reuse those bundles.
    stack = await startStack({
      home,
      cacheDir,
      apiPort,
      s3Port,
      dynamodbPort,
      reset: true,
      log,
      durableEvents,
      // Housekeeping on a timer would race the tests' own expectations about uploads and staged objects.
      sweepIntervalMs: 0,
      redriveIntervalMs: 0,
      // Tests serve web-download sources from loopback; the SSRF check refuses loopback otherwise. The
      // api function checks the address when the import is requested, the web-download function when
      // it fetches: both get the switch, and no other function does.
      functionEnv: {
        api: { HANGAR_WEB_DOWNLOAD_ALLOW_LOOPBACK: "1" },
        webDownload: { HANGAR_WEB_DOWNLOAD_ALLOW_LOOPBACK: "1" },
        // The fan-out (test/integration/fanout.test.ts) takes images above 72 MiB of virtual size, in
        // small ranges and hash links; the other tests' images stay below it and import in one invocation.
        importer: TEST_FANOUT_ENV,
      },
    });
  } catch (err) {
    const tail = await readFile(logFile, "utf8").catch(() => "");
    await rm(home, { recursive: true, force: true });
    await rm(logDir, { recursive: true, force: true });
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`the integration stack did not start: ${message}${tail ? `\n${tail}` : ""}`, {
      cause: err,
    });
  }
  log(`stack ready in ${Date.now() - started} ms`);
  for (const url of [stack.info.apiUrl, stack.info.s3Endpoint, stack.info.dynamodbEndpoint])
    assertLoopback(url);

  stack.done.catch((err: unknown) => {
    // Tests that still run will fail on refused connections; this says why.
    console.error(`integration stack went down: ${err instanceof Error ? err.message : String(err)}`);
  });

  project.provide("hangarStack", {
    info: stack.info,
    signingKey: stack.signingKey,
    home,
    logFile,
    webhookUrl: stack.webhookUrl,
    cacheDir,
    bundlesDir: join(home, "functions"),
  });

  return async () => {
    await stack.stop();
    const keep = process.env.HANGAR_TEST_KEEP === "1";
    if (keep) console.log(`integration stack home kept at ${home}`);
    else await rm(home, { recursive: true, force: true });
    if (keep || existsSync(join(logDir, FAILED_MARKER)))
      console.log(`integration stack log kept at ${logFile}`);
    else await rm(logDir, { recursive: true, force: true });
  };
}
