#!/usr/bin/env node
// Makes sure what `npm start`, `npm test` and `npm run bench` need is installed, and is silent and
// network-free when it already is.
//   node scripts/ensure-deps.mjs          node_modules current with package-lock.json; java (DynamoDB Local)
//   node scripts/ensure-deps.mjs --test   also qemu-img, the OpenStack CLIs the compatibility tests drive, and
//                                         chromium for the browser page's tests (driven by playwright-core)
// Missing system packages are installed with apt-get when running as root; otherwise one line says what
// to install and the script exits 1.
import { spawnSync } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const forTests = process.argv.includes("--test");

// Node 20.19+ and 22 (what Lambda runs); docs/deploy.md, "Node.js versions", says when that changes.
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 20 || (major === 20 && minor < 19)) {
  console.error(
    `ensure-deps: Hangar needs Node.js 20.19 or later (22 recommended); this is ${process.version}`,
  );
  process.exit(1);
}

function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

function onPath(name) {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      // keep looking
    }
  }
  return false;
}

function run(cmd, args, env = process.env) {
  const result = spawnSync(cmd, args, { cwd: root, stdio: "inherit", env });
  if (result.error) throw result.error;
  if (result.status !== 0) {
    console.error(`ensure-deps: ${cmd} ${args.join(" ")} failed with exit code ${result.status}`);
    process.exit(1);
  }
}

// npm ci leaves node_modules/.package-lock.json behind; older than the lock file means someone changed
// the dependencies since the last install.
const lock = mtime(join(root, "package-lock.json"));
const installed = mtime(join(root, "node_modules", ".package-lock.json"));
if (installed === undefined || (lock !== undefined && installed < lock)) {
  console.log("ensure-deps: installing npm dependencies (npm ci)");
  const ci = spawnSync("npm", ["ci", "--no-audit", "--no-fund"], {
    cwd: root,
    stdio: ["ignore", "inherit", "pipe"],
    encoding: "utf8",
  });
  if (ci.error) throw ci.error;
  if (ci.status !== 0) {
    // npm ci refuses a lock file that lacks an entry for an optional dependency the registry does not
    // have (vite 8 names one); npm install tolerates it and installs the locked versions of the rest.
    const reason = (ci.stderr ?? "")
      .split("\n")
      .filter((l) => /npm error (code|Missing|`npm ci`|\d{3})/.test(l))
      .join("\n");
    console.error(`${reason}\nensure-deps: npm ci failed; falling back to npm install --no-save`);
    run("npm", ["install", "--no-save", "--no-audit", "--no-fund"]);
  }
}

// command → Debian package that provides it
const wanted = [["java", "openjdk-17-jre-headless"]];
if (forTests) {
  wanted.push(
    ["qemu-img", "qemu-utils"],
    ["glance", "python3-glanceclient"],
    ["openstack", "python3-openstackclient"],
    ["chromium", "chromium"],
  );
}
// The local stack also accepts $JAVA_HOME/bin/java.
const javaHome = process.env.JAVA_HOME;
const present = (cmd) =>
  onPath(cmd) ||
  (cmd === "java" && javaHome !== undefined && mtime(join(javaHome, "bin", "java")) !== undefined);
const missing = wanted.filter(([cmd]) => !present(cmd));

if (missing.length > 0) {
  const commands = missing.map(([cmd]) => cmd).join(", ");
  const packages = [...new Set(missing.map(([, pkg]) => pkg))];
  if (process.platform !== "linux" || process.getuid?.() !== 0 || !onPath("apt-get")) {
    console.error(
      `ensure-deps: missing ${commands}; install them: sudo apt-get install -y ${packages.join(" ")}`,
    );
    process.exit(1);
  }
  // As root on Debian (CI, a fresh machine): install everything this mode needs in one go.
  const all = [...new Set(wanted.map(([, pkg]) => pkg))];
  console.log(`ensure-deps: missing ${commands}; installing ${all.join(" ")} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  run("apt-get", ["update", "-q"], env);
  run("apt-get", ["install", "-y", "-q", ...all], env);
  const still = missing.filter(([cmd]) => !present(cmd));
  if (still.length > 0) {
    console.error(`ensure-deps: ${still.map(([cmd]) => cmd).join(", ")} still missing after apt-get install`);
    process.exit(1);
  }
}
