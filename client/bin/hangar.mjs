#!/usr/bin/env node
// `hangar` / `npx hangar`: runs the TypeScript CLI through tsx's loader (no build step; Node 20 and 22).
import { register } from "tsx/esm/api";

register();
const { main } = await import("../cli.ts");
const controller = new AbortController();
let interrupted = false;
const onSignal = () => {
  // The first Ctrl-C stops transfers and keeps resume state; a second one exits at once.
  if (interrupted) process.exit(130);
  interrupted = true;
  controller.abort(new Error("interrupted"));
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
process.exitCode = await main(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  cwd: process.cwd(),
  signal: controller.signal,
});
