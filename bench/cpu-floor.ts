/**
 * The importer's CPU for qcow2 → raw against its floor, in one run (`npm run bench`, or alone:
 * `npx tsx bench/cpu-floor.ts`, or `npm run bench -- --only cpu`).
 *
 * On a local stack of its own (as bench/e2e.ts), each round runs, each in a child process of its own
 * (bench/import-child.ts, bundled):
 *  - the importer, created once, importing IMPORTS_PER_PROCESS staged copies of the 1 GiB-virtual qcow2
 *    (512 MiB of random data) in turn: CPU seconds of each import, all threads (process.cpuUsage) and
 *    the main thread alone (/proc/self/task), the first after start apart from the next ones;
 *  - the floor: md5 + sha512 of the same 1 GiB of raw bytes, in one thread, node:crypto;
 *  - the pieces: one SDK streaming GET of the 1 GiB raw object (bytes dropped), Hangar's writer storing
 *    1 GiB from memory (part uploads, payload signing included), the converter from a local file.
 * Prints CPU-s per GiB of output for each, the importer's ratio to the floor beside its target (1.25),
 * and MinIO's CPU per import for reference (it is not the importer's).
 *
 * BENCH_CPU_RUNS (default 3) rounds; BENCH_CPU_UPLOAD=raw imports the raw image (a pass-through)
 * instead; BENCH_CPU_CHILDREN="label=path,label=path" runs other bundled children too, interleaved round
 * by round (A/B of two builds); BENCH_CPU_PROF=<dir> runs the import
 * children under `node --cpu-prof` into <dir>; BENCH_CPU_NODE_ARGS adds node options to them and
 * BENCH_CPU_WRAP a command before them (e.g. `perf record -g -o <file> --` with `--perf-basic-prof`). `npx tsx bench/cpu-floor.ts --top <file.cpuprofile>`
 * prints a profile's functions by self time.
 */

import { execFileSync } from "node:child_process";
import { createReadStream, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { CopyObjectCommand, PutBucketNotificationConfigurationCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { build } from "esbuild";
import { imageKey, stagingKey } from "../functions/core/image/image.ts";
import { freePort } from "../infra/local/services.ts";
import { hangarEnv, type LocalStack, startStack } from "../infra/local/stack.ts";
import { median } from "./budgets.ts";
import { runJsonChild } from "./child.ts";
import { benchChildEnv, purgeVersions } from "./e2e.ts";

const GiB = 2 ** 30;
/** The target: the importer's CPU per GiB at most this many times the hashing floor's. */
export const CPU_TARGET = 1.25;
const IMPORTS_PER_PROCESS = Math.max(2, Number(process.env.BENCH_CPU_IMPORTS ?? 3));

export interface CpuFloorInput {
  qcow2: string;
  /** `qemu-img convert -O raw` of `qcow2`, and its md5. */
  raw: string;
  rawMd5: string;
  runs: number;
  repoRoot: string;
  log: (line: string) => void;
  /** Bundled bench/import-child.ts builds to measure, by label; bundled from this tree when absent. */
  children?: Record<string, string>;
}

/** One import of a child's series. */
interface ImportSample {
  seconds: number;
  cpuSeconds: number;
  mainCpuSeconds: number;
  /** CPU seconds by kind of thread (main, workers, v8, libuv, other:<name>). */
  threads?: Record<string, number>;
  size: number;
  checksum: string;
  /** Minor page faults during the import: pages of memory touched for the first time. */
  minorFaults?: number;
}

interface OpSample {
  seconds: number;
  bytes: number;
  opCpuSeconds: number;
  opMainCpuSeconds?: number;
  threads?: Record<string, number>;
  md5CpuSeconds?: number;
  sha512CpuSeconds?: number;
}

export interface CpuSeries {
  /** Each process's imports, in order (the first after the process started first). */
  processes: ImportSample[][];
  /** CPU seconds of each import process before its first import (Node start-up, module load). */
  startCpu: number[];
  get: OpSample[];
  put: OpSample[];
  convert: OpSample[];
  minioPerImport: number[];
}

export interface CpuFloorResult {
  floor: OpSample[];
  /** The importer's GET over its own socket (object-reader.ts), by the first child, beside the SDK's. */
  socketGet: OpSample[];
  series: Record<string, CpuSeries>;
  loadAverageBefore: number[];
  loadAverageAfter: number[];
  /** Bytes of the upload each import reads (the qcow2, or the raw with BENCH_CPU_UPLOAD=raw). */
  uploadBytes: number;
}

const SRC = { qcow2: "bench/src/ref-1g.qcow2", raw: "bench/src/ref-1g.raw" };

const BANNER =
  "import { createRequire as __benchCreateRequire } from 'module'; const require = __benchCreateRequire(import.meta.url);";

/** Where this tree's child is bundled when no other is given; removed after the run. */
const BUNDLE_DIR = join(tmpdir(), `hangar-bench-cpu-${process.pid}`);

/** Bundles bench/import-child.ts of this tree into BUNDLE_DIR. */
async function bundleChild(): Promise<string> {
  const outfile = join(BUNDLE_DIR, "import-child.mjs");
  await build({
    entryPoints: [join(import.meta.dirname, "import-child.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile,
    banner: { js: BANNER },
    logLevel: "warning",
  });
  return outfile;
}

/** Children to measure: BENCH_CPU_CHILDREN, else the given ones, else this tree's. */
async function childrenToRun(input: CpuFloorInput): Promise<Record<string, string>> {
  const fromEnv = process.env.BENCH_CPU_CHILDREN;
  if (fromEnv) {
    return Object.fromEntries(
      fromEnv.split(",").map((pair) => {
        const [label = "", path = ""] = pair.split("=");
        return [label, resolve(path)];
      }),
    );
  }
  return input.children ?? { importer: await bundleChild() };
}

export async function measureCpuFloor(input: CpuFloorInput): Promise<CpuFloorResult> {
  const children = await childrenToRun(input);
  const home = await mkdtemp(join(tmpdir(), "hangar-bench-cpu-"));
  const ports = new Set<number>();
  while (ports.size < 3) ports.add(await freePort());
  const [apiPort = 0, s3Port = 0, dynamodbPort = 0] = [...ports];
  const stackLog: string[] = [];
  let stack: LocalStack | undefined;
  let s3: S3Client | undefined;
  const loadAverageBefore = loadavg();
  try {
    stack = await startStack({
      home,
      cacheDir: resolve(process.env.HANGAR_CACHE ?? join(input.repoRoot, ".hangar", "cache")),
      apiPort,
      s3Port,
      dynamodbPort,
      reset: true,
      durableEvents: false,
      sweepIntervalMs: 0,
      redriveIntervalMs: 0,
      log: (line) => stackLog.push(`${new Date().toISOString()} ${line}`),
    });
    const info = stack.info;
    const client = new S3Client({
      endpoint: info.s3Endpoint,
      region: info.region,
      forcePathStyle: true,
      credentials: { accessKeyId: info.accessKeyId, secretAccessKey: info.secretAccessKey },
    });
    s3 = client;
    const bucket = info.bucket;
    // No events from MinIO: the bench's children are the only importers.
    await client.send(
      new PutBucketNotificationConfigurationCommand({ Bucket: bucket, NotificationConfiguration: {} }),
    );
    for (const [key, file] of [
      [SRC.qcow2, input.qcow2],
      [SRC.raw, input.raw],
    ] as const) {
      await new Upload({
        client,
        params: { Bucket: bucket, Key: key, Body: createReadStream(file, { highWaterMark: 1 << 20 }) },
        partSize: 16 << 20,
        queueSize: 4,
      }).done();
    }
    const env: Record<string, string> = {
      ...benchChildEnv(),
      ...hangarEnv(info, stack.signingKey),
      AWS_ACCESS_KEY_ID: info.accessKeyId,
      AWS_SECRET_ACCESS_KEY: info.secretAccessKey,
    };
    const minioPid = await readFile(join(home, "children.json"), "utf8")
      .then((t) => (JSON.parse(t) as { name: string; pid: number }[]).find((c) => c.name === "MinIO")?.pid)
      .catch(() => undefined);
    const profileDir = process.env.BENCH_CPU_PROF;
    if (profileDir) mkdirSync(profileDir, { recursive: true });

    // BENCH_CPU_UPLOAD=raw stages the raw image instead: its imports pass through (for A/B runs).
    const upload = process.env.BENCH_CPU_UPLOAD === "raw" ? "raw" : "qcow2";
    const stage = async (): Promise<string> => {
      const res = await fetch(`${info.apiUrl}/v2/images`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-auth-token": info.tokens.admin },
        body: JSON.stringify({ name: "bench-cpu", disk_format: upload, container_format: "bare" }),
      });
      if (res.status !== 201) throw new Error(`create image: ${res.status} ${await res.text()}`);
      const { id } = (await res.json()) as { id: string };
      await client.send(
        new CopyObjectCommand({
          Bucket: bucket,
          Key: stagingKey(id),
          CopySource: `${bucket}/${SRC[upload]}`,
        }),
      );
      return id;
    };

    const floor: OpSample[] = [];
    const socketGet: OpSample[] = [];
    const series: Record<string, CpuSeries> = Object.fromEntries(
      Object.keys(children).map((label) => [
        label,
        { processes: [], startCpu: [], get: [], put: [], convert: [], minioPerImport: [] },
      ]),
    );
    const op = async (child: string, args: string[]) => (await runChild(child, args, env)) as OpSample;

    for (let round = 0; round < input.runs; round++) {
      floor.push(await op(Object.values(children)[0] as string, ["floor", input.raw]));
      socketGet.push(await op(Object.values(children)[0] as string, ["socket-get", SRC.raw]));
      for (const [label, child] of Object.entries(children)) {
        const s = series[label] as CpuSeries;
        const ids: string[] = [];
        for (let i = 0; i < IMPORTS_PER_PROCESS; i++) ids.push(await stage());
        const minioBefore = cpuOf(minioPid);
        const nodeArgs = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [];
        const wrap = (process.env.BENCH_CPU_WRAP ?? "").split(/\s+/).filter(Boolean);
        nodeArgs.push(...(process.env.BENCH_CPU_NODE_ARGS ?? "").split(/\s+/).filter(Boolean));
        const report = (await runChild(child, ["imports", ...ids.map(stagingKey)], env, nodeArgs, wrap)) as {
          imports: ImportSample[];
          startCpuSeconds: number;
        };
        const minioAfter = cpuOf(minioPid);
        for (const m of report.imports) {
          if (m.checksum !== input.rawMd5)
            throw new Error(`${label}: md5 ${m.checksum}, expected ${input.rawMd5}`);
        }
        s.processes.push(report.imports);
        s.startCpu.push(report.startCpuSeconds);
        if (minioBefore !== undefined && minioAfter !== undefined)
          s.minioPerImport.push((minioAfter - minioBefore) / ids.length);
        for (const id of ids) await purgeVersions(client, bucket, imageKey(id));
        s.get.push(await op(child, ["get", SRC.raw]));
        s.put.push(await op(child, ["put", String(GiB), "bench/out/cpu-put"]));
        await purgeVersions(client, bucket, "bench/out/cpu-put");
        s.convert.push(await op(child, ["convert", input.qcow2]));
        const later = report.imports.slice(1).map((m) => m.cpuSeconds);
        for (const m of report.imports)
          input.log(
            `${label} import threads (CPU-s): ${JSON.stringify(m.threads)}, minor faults ${m.minorFaults}`,
          );
        input.log(`${label} put threads (CPU-s per ${GiB} B): ${JSON.stringify(s.put.at(-1)?.threads)}`);
        input.log(
          `cpu round ${round + 1}/${input.runs} ${label}: imports ${report.imports.map((m) => m.cpuSeconds.toFixed(2)).join(", ")} CPU-s ` +
            `(floor ${floor.at(-1)?.opCpuSeconds.toFixed(2)}; later median ${median(later).toFixed(2)}); load ${loadavg()[0]?.toFixed(2)}`,
        );
      }
    }
    const uploadBytes = statSync(upload === "raw" ? input.raw : input.qcow2).size;
    return { floor, socketGet, series, loadAverageBefore, loadAverageAfter: loadavg(), uploadBytes };
  } catch (err) {
    const tail = stackLog.slice(-30).join("\n");
    throw new Error(`cpu bench failed: ${err instanceof Error ? err.message : String(err)}\n${tail}`, {
      cause: err,
    });
  } finally {
    s3?.destroy();
    await stack?.stop();
    await rm(home, { recursive: true, force: true });
    await rm(BUNDLE_DIR, { recursive: true, force: true });
  }
}

/** CPU seconds (user + system) a process has used so far, from /proc; undefined where there is none. */
function cpuOf(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

async function runChild(
  child: string,
  args: string[],
  env: Record<string, string>,
  nodeArgs: string[] = [],
  wrap: string[] = [],
): Promise<unknown> {
  const [command = "", ...rest] = [...wrap, process.execPath, ...nodeArgs, child, ...args];
  return (await runJsonChild<unknown>(command, rest, env, `import-child ${args[0]}`)).report;
}

/** CPU-s per GiB of output by kind of thread, each the median over `imports`. */
function threadMedians(imports: ImportSample[]): Record<string, number> {
  const kinds = new Set(imports.flatMap((m) => Object.keys(m.threads ?? {})));
  return Object.fromEntries(
    [...kinds].map((k) => [
      k,
      Number(median(imports.map((m) => (m.threads?.[k] ?? 0) / (m.size / GiB))).toFixed(3)),
    ]),
  );
}

/**
 * Per-GiB figures of one series against the floor. `readPerGiB` is what reading the upload costs per
 * GiB of output (the importer's socket GET alone, scaled to the upload's size): with the floor and the
 * converter alone it makes the least an import could spend here, however lean everything between.
 */
export function summarizeSeries(s: CpuSeries, floorPerGiB: number, readPerGiB: number) {
  const perGiB = (cpu: number, bytes: number) => cpu / (bytes / GiB);
  const firsts = s.processes.map((p) => p[0] as ImportSample);
  const later = s.processes.flatMap((p) => p.slice(1));
  const importPerGiB = median(later.map((m) => perGiB(m.cpuSeconds, m.size)));
  const convertPerGiB = median(s.convert.map((m) => perGiB(m.opCpuSeconds, m.bytes)));
  const boundPerGiB = floorPerGiB + readPerGiB + convertPerGiB;
  return {
    importCpuPerGiB: importPerGiB,
    importMainThreadCpuPerGiB: median(later.map((m) => perGiB(m.mainCpuSeconds, m.size))),
    importThreadsCpuPerGiB: threadMedians(later),
    firstImportCpuPerGiB: median(firsts.map((m) => perGiB(m.cpuSeconds, m.size))),
    importSeconds: median(later.map((m) => m.seconds)),
    minorFaults: median(later.map((m) => m.minorFaults ?? 0)),
    firstMinorFaults: median(firsts.map((m) => m.minorFaults ?? 0)),
    firstImportSeconds: median(firsts.map((m) => m.seconds)),
    startCpuSeconds: median(s.startCpu),
    ratioToFloor: importPerGiB / floorPerGiB,
    firstRatioToFloor: median(firsts.map((m) => perGiB(m.cpuSeconds, m.size))) / floorPerGiB,
    getCpuPerGiB: median(s.get.map((m) => perGiB(m.opCpuSeconds, m.bytes))),
    putCpuPerGiB: median(s.put.map((m) => perGiB(m.opCpuSeconds, m.bytes))),
    convertCpuPerGiB: convertPerGiB,
    boundCpuPerGiB: boundPerGiB,
    boundRatioToFloor: boundPerGiB / floorPerGiB,
    minioCpuPerImport: median(s.minioPerImport),
    samples: {
      imports: s.processes.map((p) => p.map((m) => Number(m.cpuSeconds.toFixed(3)))),
      importSeconds: s.processes.map((p) => p.map((m) => Number(m.seconds.toFixed(3)))),
    },
  };
}

export function summarizeCpuFloor(r: CpuFloorResult) {
  const floorPerGiB = median(r.floor.map((m) => m.opCpuSeconds / (m.bytes / GiB)));
  const socketGetPerGiB = median((r.socketGet ?? []).map((m) => m.opCpuSeconds / (m.bytes / GiB)));
  // Every import's output is the raw image of the same size as the floor's input.
  const outputBytes = r.floor[0]?.bytes ?? GiB;
  const readPerGiB = socketGetPerGiB * (r.uploadBytes / outputBytes);
  return {
    floorCpuPerGiB: floorPerGiB,
    md5CpuPerGiB: median(r.floor.map((m) => (m.md5CpuSeconds ?? 0) / (m.bytes / GiB))),
    sha512CpuPerGiB: median(r.floor.map((m) => (m.sha512CpuSeconds ?? 0) / (m.bytes / GiB))),
    socketGetCpuPerGiB: socketGetPerGiB,
    readUploadCpuPerGiB: readPerGiB,
    target: CPU_TARGET,
    loadAverageBefore: r.loadAverageBefore,
    loadAverageAfter: r.loadAverageAfter,
    series: Object.fromEntries(
      Object.entries(r.series).map(([label, s]) => [label, summarizeSeries(s, floorPerGiB, readPerGiB)]),
    ),
  };
}

/** The table `npm run bench` prints for this part. */
export function cpuTable(summary: ReturnType<typeof summarizeCpuFloor>): Record<string, string> {
  const f = (x: number) => x.toFixed(2);
  const rows: Record<string, string> = {
    "CPU floor: md5 + sha512 of the 1 GiB output, one thread (CPU-s/GiB)": `${f(summary.floorCpuPerGiB)} (md5 ${f(summary.md5CpuPerGiB)} + sha512 ${f(summary.sha512CpuPerGiB)})`,
  };
  rows["piece: the importer's GET over its own socket (CPU-s/GiB)"] = f(summary.socketGetCpuPerGiB);
  for (const [label, s] of Object.entries(summary.series)) {
    const p = Object.keys(summary.series).length > 1 ? `[${label}] ` : "";
    rows[`${p}importer qcow2 → raw, all threads (CPU-s/GiB) / main thread`] =
      `${f(s.importCpuPerGiB)} / ${f(s.importMainThreadCpuPerGiB)}`;
    rows[`${p}ratio importer / floor (target ≤ ${CPU_TARGET})`] = f(s.ratioToFloor);
    rows[`${p}least possible here: floor + reading the upload + converter, each alone (CPU-s/GiB) / ratio`] =
      `${f(s.boundCpuPerGiB)} (${f(summary.floorCpuPerGiB)} + ${f(summary.readUploadCpuPerGiB)} + ${f(s.convertCpuPerGiB)}) / ${f(s.boundRatioToFloor)}`;
    rows[`${p}first import after start (CPU-s/GiB) / ratio to floor`] =
      `${f(s.firstImportCpuPerGiB)} / ${f(s.firstRatioToFloor)}`;
    rows[`${p}import wall (s): first / later`] = `${f(s.firstImportSeconds)} / ${f(s.importSeconds)}`;
    rows[`${p}pages of memory touched for the first time (minor faults): first / later`] =
      `${s.firstMinorFaults.toFixed(0)} / ${s.minorFaults.toFixed(0)}`;
    rows[`${p}pieces (CPU-s/GiB): SDK GET / writer put / converter`] =
      `${f(s.getCpuPerGiB)} / ${f(s.putCpuPerGiB)} / ${f(s.convertCpuPerGiB)}`;
    rows[`${p}MinIO CPU-s per import (not the importer's)`] = f(s.minioCpuPerImport);
  }
  return rows;
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

/** A V8 .cpuprofile's functions by self time: [share, ms, name at file:line]. */
export function profileTop(file: string, limit = 25): [string, string, string][] {
  const profile = JSON.parse(readFileSync(file, "utf8")) as {
    nodes: ProfileNode[];
    samples: number[];
    timeDeltas: number[];
  };
  const byNode = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    byNode.set(id, (byNode.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const byFrame = new Map<string, number>();
  let total = 0;
  for (const n of profile.nodes) {
    const t = byNode.get(n.id) ?? 0;
    total += t;
    const { functionName, url, lineNumber } = n.callFrame;
    const where = url
      ? `${url.replace(/^.*\/node_modules\//, "").replace(/^file:\/\/.*\//, "")}:${lineNumber + 1}`
      : "";
    const key = `${functionName || "(anonymous)"} ${where}`.trim();
    byFrame.set(key, (byFrame.get(key) ?? 0) + t);
  }
  return [...byFrame.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([k, t]) => [`${((100 * t) / total).toFixed(1)} %`, (t / 1000).toFixed(0), k]);
}

async function main(): Promise<void> {
  const top = process.argv.indexOf("--top");
  if (top >= 0) {
    for (const file of process.argv.slice(top + 1)) {
      console.log(file);
      console.table(profileTop(file));
    }
    return;
  }
  const work = join(import.meta.dirname, ".work");
  const qcow2 = join(work, "ref-1g.qcow2");
  const raw = join(work, "ref-1g.raw");
  if (!existsSync(qcow2) || !existsSync(raw))
    throw new Error(`${qcow2} and ${raw} are made by \`npm run bench -- --only cpu\`; run that first`);
  const md5File = `${raw}.md5`;
  if (!existsSync(md5File))
    writeFileSync(md5File, execFileSync("md5sum", [raw], { encoding: "utf8" }).split(/\s+/)[0] ?? "");
  const md5 = readFileSync(md5File, "utf8").trim();
  const started = performance.now();
  const result = await measureCpuFloor({
    qcow2,
    raw,
    rawMd5: md5,
    runs: Math.max(1, Number(process.env.BENCH_CPU_RUNS ?? 3)),
    repoRoot: join(import.meta.dirname, ".."),
    log: (line) => console.error(`[cpu ${((performance.now() - started) / 1000).toFixed(0)} s] ${line}`),
  });
  const summary = summarizeCpuFloor(result);
  console.log(JSON.stringify(summary, null, 2));
  console.table(cpuTable(summary));
}

if (process.argv[1] && resolve(process.argv[1]) === import.meta.filename) await main();
