import { spawn } from "node:child_process";
import { appendFileSync } from "node:fs";

/**
 * Runs a bench child process that prints its report as JSON on its last line of stdout, and gives that
 * report with the process's wall time. A non-zero exit, or no JSON on the last line, rejects with the
 * tail of the child's stderr (`label` names it in the message). With BENCH_CHILD_LOG=<file>, every
 * child's stderr (the importer's log lines) is appended to that file as well.
 */
export function runJsonChild<T>(
  command: string,
  args: string[],
  env: Record<string, string>,
  label: string,
): Promise<{ report: T; processSeconds: number }> {
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const p = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    p.stderr.setEncoding("utf8").on("data", (d: string) => {
      err = (err + d).slice(-8000);
      if (process.env.BENCH_CHILD_LOG) appendFileSync(process.env.BENCH_CHILD_LOG, d);
    });
    p.on("error", reject);
    p.on("close", (code) => {
      const processSeconds = (performance.now() - started) / 1000;
      if (code !== 0) {
        reject(new Error(`${label} exited ${code}: ${err}`));
        return;
      }
      try {
        resolvePromise({ report: JSON.parse(out.trim().split("\n").at(-1) ?? "") as T, processSeconds });
      } catch (e) {
        reject(new Error(`${label} printed no report: ${out}\n${err}`, { cause: e }));
      }
    });
  });
}
