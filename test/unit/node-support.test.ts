import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

// The AWS SDK warns once per process, on the first client it builds, that its releases after the
// first week of January 2027 need Node 22 (NodeVersionSupportWarning, through process.emitWarning).
// Development still supports Node 20.19+, so the npm scripts switch that one warning off with the
// SDK's own variable; every other warning must still reach the terminal.

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SWITCH = "AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED";
const major = Number(process.versions.node.split(".")[0]);

/** stderr of a Node process that builds an S3 client and then emits a warning of its own. */
async function stderrOf(env: Record<string, string>): Promise<string> {
  const script = `
    const { S3Client } = require("@aws-sdk/client-s3");
    new S3Client({ region: "us-east-1" });
    process.emitWarning("a warning of our own");`;
  const { stderr } = await run(process.execPath, ["-e", script], {
    cwd: root,
    env: { PATH: process.env.PATH ?? "", ...env },
    timeout: 20_000,
  });
  return stderr;
}

describe("Node version support", () => {
  it("npm start, test, sweep and reconcile switch off only the SDK's Node-version warning", async () => {
    const pkg = JSON.parse(await readFile(path.join(root, "package.json"), "utf8")) as {
      scripts: Record<string, string>;
      engines: { node: string };
    };
    for (const name of ["start", "test", "test:unit", "test:integration", "sweep", "reconcile"]) {
      const command = pkg.scripts[name] ?? "";
      // Set on the command that runs Hangar (after ensure-deps), so its child processes inherit it.
      const last = command.split("&&").at(-1) ?? "";
      expect(last.trim(), name).toMatch(new RegExp(`^${SWITCH}=true `));
    }
    expect(pkg.engines.node).toBe(">=20.19");
  });

  it(`${SWITCH}=true silences that warning and nothing else`, async () => {
    const loud = await stderrOf({});
    // Node 22 and later never get it; Node 20 gets it unless switched off.
    expect(loud.includes("NodeVersionSupportWarning")).toBe(major < 22);
    expect(loud).toContain("a warning of our own");
    const quiet = await stderrOf({ [SWITCH]: "true" });
    expect(quiet).not.toContain("NodeVersionSupportWarning");
    expect(quiet).toContain("a warning of our own");
  });
});
