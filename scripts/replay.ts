/**
 * `npm run replay -- <file>`: puts an event from the local failure destination (`<home>/failed-events/`)
 * back into the running local stack's asynchronous invocation queue, for the function it failed in,
 * through the stack's Lambda Invoke API (`InvocationType: Event`). The file then moves to
 * `failed-events/replayed/`; if the event fails again, a new file records the new attempts.
 * The stack is the one whose home holds the file's `failed-events/` folder, or HANGAR_HOME (default
 * <repo>/.hangar) for a file kept elsewhere.
 */
import { mkdir, readFile, rename } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as z from "zod";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");

const FailedInvocation = z.object({ functionName: z.string().min(1), event: z.unknown() });

async function main(): Promise<number> {
  const [file, ...rest] = process.argv.slice(2);
  if (!file || rest.length > 0) {
    process.stderr.write("usage: npm run replay -- <home>/failed-events/<file>.json\n");
    return 2;
  }
  const folder = dirname(resolve(file));
  const home =
    basename(folder) === "failed-events"
      ? dirname(folder)
      : resolve(process.env.HANGAR_HOME || join(repoRoot, ".hangar"));
  const failed = FailedInvocation.parse(JSON.parse(await readFile(file, "utf8")));
  let info: { lambdaEndpoint?: unknown };
  try {
    info = JSON.parse(await readFile(join(home, "local.json"), "utf8")) as { lambdaEndpoint?: unknown };
  } catch {
    process.stderr.write(`no running local stack in ${home} (no local.json); start it with npm start\n`);
    return 1;
  }
  if (typeof info.lambdaEndpoint !== "string" || !/^http:\/\/127\.0\.0\.1:\d+$/.test(info.lambdaEndpoint)) {
    process.stderr.write(`${home}/local.json names no loopback Lambda endpoint; restart the stack\n`);
    return 1;
  }
  const url = `${info.lambdaEndpoint}/2015-03-31/functions/${encodeURIComponent(failed.functionName)}/invocations`;
  const res = await fetch(url, {
    method: "POST",
    headers: { "x-amz-invocation-type": "Event", "content-type": "application/json" },
    body: JSON.stringify(failed.event),
  });
  if (res.status !== 202) {
    process.stderr.write(`the stack refused the event: HTTP ${res.status} ${await res.text()}\n`);
    return 1;
  }
  const done = join(folder, "replayed");
  await mkdir(done, { recursive: true });
  await rename(file, join(done, basename(file)));
  process.stdout.write(`queued again for ${failed.functionName}; the stack's log says how it went\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`replay failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
