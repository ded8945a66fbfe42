/**
 * A real Glance (Debian bookworm's `python3-glance`, 25.1) as the client end to end's peer
 * (bench/client-e2e.ts): `glance-api` as a child process with its own configuration in bench/.work/:
 * sqlite database (`glance-manage db_sync`), no keystone (its context middleware fed with identity headers), one
 * process (`workers = 0`), glance-direct import with the `image_conversion` plugin converting to raw
 * (qemu-img), stored either on the local file store or on the S3 store in the bench's MinIO with
 * multipart forced (`s3_store_large_object_size = -1`; 0 reads as unset. At glance_store's defaults a
 * glance-direct import, whose size the store is told is 0 (unknown), takes the single-part path, which
 * gathers the whole image in one Python bytes object by concatenation).
 *
 * Driven as a client drives it: create (POST /v2/images), stage (curl PUT of the file), import
 * (POST …/import, glance-direct), then show until `active`. Missing packages are installed with apt-get
 * when running as root; when that is impossible the peer is skipped with the reason.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "../infra/local/services.ts";
import { busiestThread, procCpuSeconds, threadCpuSeconds } from "./reference.ts";

const run = promisify(execFile);
/** Debian's own interpreter: the packages live in its dist-packages, not in any other Python on PATH. */
const PYTHON = "/usr/bin/python3";

export interface GlanceRun {
  /** create → `active` seen (s). */
  seconds: number;
  create: number;
  stage: number;
  /** import call → `active` seen. */
  import: number;
  /**
   * CPU seconds of glance-api (qemu-img included), of the client (curl, for the stage) and, on the S3
   * store, of MinIO, during the run; `importStage` is the same from the import call to `active`.
   */
  cpu: {
    glance: number;
    busiestThread: number;
    minio?: number;
    client: number;
    importStage: { glance: number; busiestThread: number; minio?: number };
  };
}

export interface GlancePeer {
  kind: "file" | "s3";
  run(qcow2: string, rawMd5: string, pollMs: number): Promise<GlanceRun>;
  stop(): Promise<void>;
}

export interface GlanceOptions {
  kind: "file" | "s3";
  workDir: string;
  s3: { endpoint: string; accessKey: string; secretKey: string; minioPid?: number | undefined };
  log: (line: string) => void;
}

const has = (modules: string) =>
  spawnSync(PYTHON, ["-c", `import ${modules}`], { stdio: "ignore" }).status === 0;

/** Installs python3-glance (and python3-boto3 for the S3 store) when missing; throws why it cannot. */
function ensureGlance(kind: "file" | "s3", log: (line: string) => void): void {
  const modules = kind === "s3" ? "glance, glance_store, boto3" : "glance, glance_store";
  if (has(modules)) return;
  if (process.getuid?.() !== 0)
    throw new Error(
      "python3-glance is not installed (apt-get install python3-glance python3-boto3, as root)",
    );
  log("installing python3-glance and python3-boto3 with apt-get (once)");
  const apt = spawnSync(
    "apt-get",
    ["install", "-y", "--no-install-recommends", "python3-glance", "python3-boto3", "qemu-utils"],
    { env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" }, encoding: "utf8" },
  );
  if (apt.status !== 0 || !has(modules))
    throw new Error(
      `apt-get could not install python3-glance: ${(apt.stderr ?? "").trim().split("\n").at(-1)}`,
    );
}

/**
 * What keystone's middleware would put on each request, sent by the client itself: Glance's context
 * middleware trusts these headers when no keystone filter is in the pipeline (a task needs an owner,
 * which the unauthenticated context does not give).
 */
const IDENTITY = {
  "X-Identity-Status": "Confirmed",
  "X-User-Id": "bench",
  "X-Tenant-Id": "bench",
  "X-Roles": "admin,member,reader",
};

const PASTE = `[pipeline:glance-api]
pipeline = versionnegotiation context rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:context]
paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory
`;

function config(o: GlanceOptions, port: number): string {
  const dir = o.workDir;
  const store =
    o.kind === "file"
      ? `stores = file
default_store = file
filesystem_store_datadir = ${join(dir, "images")}/`
      : `stores = s3
default_store = s3
s3_store_host = ${o.s3.endpoint}
s3_store_access_key = ${o.s3.accessKey}
s3_store_secret_key = ${o.s3.secretKey}
s3_store_bucket = glance-bench
s3_store_create_bucket_on_put = true
s3_store_bucket_url_format = path
s3_store_large_object_size = -1`;
  return `[DEFAULT]
bind_host = 127.0.0.1
bind_port = ${port}
workers = 0
enabled_import_methods = [glance-direct]
node_staging_uri = file://${join(dir, "staging")}
image_size_cap = 10737418240
use_stderr = true

[database]
connection = sqlite:///${join(dir, "glance.sqlite")}

[paste_deploy]
flavor =
config_file = ${join(dir, "glance-api-paste.ini")}

[image_import_opts]
image_import_plugins = ['image_conversion']

[image_conversion]
output_format = raw

[glance_store]
${store}
`;
}

/** CPU seconds of the children this process has waited for (curl), from /proc. */
function reapedChildrenCpu(): number {
  return treeCpu("self") - process.cpuUsage().user / 1e6 - process.cpuUsage().system / 1e6;
}

/** CPU seconds of a process and of the children it has waited for (qemu-img), from /proc. */
function treeCpu(pid: number | undefined | "self"): number {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100;
  } catch {
    return Number.NaN;
  }
}

export async function startGlance(o: GlanceOptions): Promise<GlancePeer> {
  ensureGlance(o.kind, o.log);
  rmSync(o.workDir, { recursive: true, force: true });
  for (const d of ["images", "staging"]) mkdirSync(join(o.workDir, d), { recursive: true });
  const port = await freePort();
  const conf = join(o.workDir, "glance-api.conf");
  writeFileSync(join(o.workDir, "glance-api-paste.ini"), PASTE);
  writeFileSync(conf, config(o, port));
  const py = (module: string, args: string[]) =>
    `import sys; from ${module} import main; sys.argv = ['glance', ${args.map((a) => JSON.stringify(a)).join(", ")}]; sys.exit(main())`;
  try {
    await run(PYTHON, ["-c", py("glance.cmd.manage", ["--config-file", conf, "db", "sync"])], {
      maxBuffer: 16 << 20,
    });
  } catch (err) {
    throw new Error(
      `glance-manage db sync failed: ${String((err as { stderr?: string }).stderr ?? err).slice(-500)}`,
    );
  }
  // Its log goes to a file beside its configuration (read back for error messages).
  const logFile = join(o.workDir, "glance-api.log");
  const logFd = openSync(logFile, "w");
  const child: ChildProcess = spawn(PYTHON, ["-c", py("glance.cmd.api", ["--config-file", conf])], {
    stdio: ["ignore", logFd, logFd],
    cwd: o.workDir,
  });
  closeSync(logFd);
  // A bench that dies without stopping its peers must not leave Glance running.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));
  const logTail = () => {
    try {
      return readFileSync(logFile, "utf8").slice(-3000);
    } catch {
      return "";
    }
  };
  const base = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await gone;
    clearTimeout(timer);
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`glance-api exited ${child.exitCode}: ${logTail()}`);
    const ok = await fetch(`${base}/v2/images`, { headers: IDENTITY, signal: AbortSignal.timeout(2000) })
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`glance-api did not answer within 60 s: ${logTail()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  o.log(`Glance (${o.kind} store) up on ${base}, pid ${child.pid}`);

  const json = async (method: string, path: string, body?: unknown, expect = [200, 201, 202, 204]) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { "content-type": "application/json", ...IDENTITY },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    if (!expect.includes(res.status))
      throw new Error(`Glance ${method} ${path}: ${res.status} ${text.slice(0, 200)}\n${logTail()}`);
    return text ? (JSON.parse(text) as Record<string, unknown>) : {};
  };

  return {
    kind: o.kind,
    stop,
    async run(qcow2, rawMd5, pollMs) {
      const cpu0 = treeCpu(child.pid);
      const threads0 = threadCpuSeconds(child.pid);
      const minio0 = procCpuSeconds(o.s3.minioPid);
      const curl0 = reapedChildrenCpu();
      const t0 = Date.now();
      const image = await json("POST", "/v2/images", {
        name: "bench-glance",
        disk_format: "qcow2",
        container_format: "bare",
      });
      const id = String(image.id);
      const t1 = Date.now();
      await run("curl", [
        "-sS",
        "--fail",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        ...Object.entries(IDENTITY).flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
        "-T",
        qcow2,
        `${base}/v2/images/${id}/stage`,
      ]);
      const t2 = Date.now();
      const curl = reapedChildrenCpu() - curl0;
      const cpu2 = treeCpu(child.pid);
      const threads2 = threadCpuSeconds(child.pid);
      const minio2 = procCpuSeconds(o.s3.minioPid);
      await json("POST", `/v2/images/${id}/import`, { method: { name: "glance-direct" } });
      let seen: Record<string, unknown>;
      const deadline = Date.now() + 600_000;
      let taskChecked = Date.now();
      for (;;) {
        seen = await json("GET", `/v2/images/${id}`);
        if (seen.status === "active") break;
        // A failed import puts the image back to `queued` and names the store it failed for.
        let failed = String(seen.os_glance_failed_import ?? "");
        if (failed === "" && Date.now() - taskChecked > 1000) {
          taskChecked = Date.now();
          const tasks = (await json("GET", `/v2/images/${id}/tasks`)).tasks as {
            status: string;
            message: string;
          }[];
          const bad = tasks?.find((t) => t.status === "failure");
          if (bad) failed = `task: ${bad.message}`;
        }
        if (
          failed !== "" ||
          !["queued", "importing", "uploading"].includes(String(seen.status)) ||
          Date.now() > deadline
        )
          throw new Error(
            `Glance image ${id} is ${String(seen.status)} (failed for: ${failed}): ${logTail()}`,
          );
        await new Promise((r) => setTimeout(r, pollMs));
      }
      const t3 = Date.now();
      if (seen.checksum !== rawMd5 || seen.disk_format !== "raw")
        throw new Error(
          `Glance stored ${String(seen.disk_format)} with md5 ${String(seen.checksum)}, expected raw ${rawMd5}`,
        );
      const cpu3 = treeCpu(child.pid);
      const threads3 = threadCpuSeconds(child.pid);
      const minio1 = procCpuSeconds(o.s3.minioPid);
      const s3Store = o.kind === "s3" && minio0 !== undefined && minio1 !== undefined;
      await json("DELETE", `/v2/images/${id}`);
      return {
        seconds: (t3 - t0) / 1000,
        create: (t1 - t0) / 1000,
        stage: (t2 - t1) / 1000,
        import: (t3 - t2) / 1000,
        cpu: {
          glance: cpu3 - cpu0,
          busiestThread: busiestThread(threads0, threads3),
          ...(s3Store ? { minio: minio1 - minio0 } : {}),
          client: curl,
          importStage: {
            glance: cpu3 - cpu2,
            busiestThread: busiestThread(threads2, threads3),
            ...(s3Store && minio2 !== undefined ? { minio: minio1 - minio2 } : {}),
          },
        },
      };
    },
  };
}
