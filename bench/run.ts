/**
 * Benchmark (`npm run bench`). Builds a qcow2 of 1 GiB virtual size holding 512 MiB of random data
 * (and an 8 GiB-virtual copy) in bench/.work/, then measures in the same run:
 *  (a) converter qcow2 → dense raw file vs `qemu-img convert -S 0 -O raw`, wall time of whole
 *      processes, alternating A/B, medians of BENCH_RUNS (default 5);
 *  (b) peak RSS of the real importer (child process) for the 1 GiB and the 8 GiB-virtual image, and
 *      of the bare converter process;
 *  (c) end to end on a local stack of its own (bench/e2e.ts): staged object in MinIO → stored object,
 *      through the real importer, vs a plain SDK GET → lib-storage Upload of the same output bytes with
 *      the importer's part size and payload signing (and, for reference, the same GET into Hangar's own
 *      writer); medians of BENCH_E2E_RUNS (default 5) interleaved rounds.
 * For reference, the same image with text-like data and zlib-compressed clusters, and again with
 * zstd-compressed clusters, is converted against qemu-img and imported once each.
 * First, the bundle budgets (bench/budgets.ts): every Lambda bundle built, its JavaScript and its module
 * init (median of 5 fresh processes) against its budget.
 * Then the API under load (bench/api-load.ts): create and show against their targets.
 *  (d) the importer's CPU per GiB for qcow2 → raw against md5 + sha512 of the same bytes (bench/cpu-floor.ts).
 *  (e) the client's end to end (bench/client-e2e.ts): create → upload through the link → `active` on a
 *     stack started as `npm start` starts it, with the time after the upload broken down, beside the plain
 *     copy and a real Glance on its file and S3 stores (BENCH_CLIENT_GLANCE=0 for none).
 * BENCH_ONLY=a or BENCH_ONLY=e2e runs one half, BENCH_ONLY=api only the API load, BENCH_ONLY=cpu only (d),
 * BENCH_ONLY=client only (e); BENCH_ONLY=budgets (or `npm run bench -- --only budgets`)
 * only the budgets, which then replace the `budgets` entry of bench/results.json and keep the rest.
 * Prints a table and writes bench/results.json.
 */
import { spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  ftruncateSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import { apiLoadTable, measureApiLoad } from "./api-load.ts";
import { type BudgetRow, budgetFindings, budgetTable, INIT_RUNS, measureBudgets, median } from "./budgets.ts";
import { clientEndToEndRows, glanceKinds, measureClientEndToEnd } from "./client-e2e.ts";
import { cpuTable, measureCpuFloor, summarizeCpuFloor } from "./cpu-floor.ts";
import { benchChildEnv, type EndToEndResult, type Measured, measureEndToEnd } from "./e2e.ts";
import { ensureReferenceImage, sh } from "./reference.ts";

const WORK = join(import.meta.dirname, ".work");
const RUNS = Math.max(3, Number(process.env.BENCH_RUNS ?? 5));
const E2E_RUNS = Math.max(3, Number(process.env.BENCH_E2E_RUNS ?? 5));
// Outputs go to tmpfs when there is one: disk writeback and discard make file timings swing ±100 %.
const OUT_DIR = process.env.BENCH_OUT_DIR ?? (existsSync("/dev/shm") ? "/dev/shm" : WORK);
const MiB = 1 << 20;
const GiB = 2 ** 30;

/** The reference image (bench/reference.ts) and an 8 GiB-virtual copy of it. */
function ensureImages(): { small: string; big: string } {
  const small = ensureReferenceImage().qcow2;
  const big = join(WORK, "ref-8g.qcow2");
  if (!existsSync(big)) {
    sh("cp", [small, `${big}.tmp`]);
    sh("qemu-img", ["resize", "-f", "qcow2", `${big}.tmp`, "8G"]);
    sh("mv", [`${big}.tmp`, big]);
  }
  return { small, big };
}

/**
 * A cloud image's layout: 1 GiB virtual, 512 MiB of text-like data (words from a seeded generator,
 * about 3:1 under zlib) in the same stretches as the reference image, every cluster compressed
 * (`qemu-img convert -c`).
 */
function ensureCompressedImage(): string {
  const path = join(WORK, "ref-1g-c.qcow2");
  if (existsSync(path)) return path;
  const raw = join(WORK, "ref-c.raw");
  let seed = 0x9e3779b9;
  const next = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const words = Array.from({ length: 4096 }, () =>
    Buffer.from(
      Array.from({ length: 2 + (next() % 9) }, () => String.fromCharCode(97 + (next() % 26))).join(""),
    ),
  );
  const fd = openSync(raw, "w");
  try {
    ftruncateSync(fd, GiB);
    const stretch = Buffer.alloc(8 * MiB);
    for (let i = 0; i < 64; i++) {
      let at = 0;
      while (at < stretch.length) {
        const w = words[next() % words.length] as Buffer;
        at += w.copy(stretch, at);
        if (at < stretch.length) stretch[at++] = next() % 11 === 0 ? 10 : 32;
      }
      writeSync(fd, stretch, 0, stretch.length, 2 * i * 8 * MiB);
    }
  } finally {
    closeSync(fd);
  }
  sh("qemu-img", ["convert", "-c", "-f", "raw", "-O", "qcow2", raw, `${path}.tmp`]);
  sh("mv", [`${path}.tmp`, path]);
  rmSync(raw);
  return path;
}

/** The same image with zstd-compressed clusters (`-o compression_type=zstd`). */
function ensureZstdImage(compressed: string): string {
  const path = join(WORK, "ref-1g-z.qcow2");
  if (existsSync(path)) return path;
  sh("qemu-img", ["convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", compressed, `${path}.tmp`]);
  sh("mv", [`${path}.tmp`, path]);
  return path;
}

/** Runs a process under /usr/bin/time: wall seconds and CPU seconds (user + system) of the whole process. */
function timed(cmd: string, args: string[]): { seconds: number; cpu: number; stdout: string } {
  const timeFile = join(WORK, "time.txt");
  const r = spawnSync("/usr/bin/time", ["-f", "%e %U %S", "-o", timeFile, cmd, ...args], {
    encoding: "utf8",
    maxBuffer: 16 * MiB,
    // Reads and writes share libuv's pool; qemu-img runs more I/O threads than libuv's default 4.
    env: benchChildEnv({ UV_THREADPOOL_SIZE: "8" }),
  });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.stderr}`);
  const [wall, user, sys] = readFileSync(timeFile, "utf8").trim().split(/\s+/).slice(-3).map(Number);
  return { seconds: wall ?? Number.NaN, cpu: (user ?? 0) + (sys ?? 0), stdout: r.stdout };
}

interface ChildReport {
  seconds: number;
  bytes: number;
  maxRssKiB: number;
}

const BANNER =
  "import { createRequire as __benchCreateRequire } from 'module'; const require = __benchCreateRequire(import.meta.url);";

/** Bundles a bench child so Node starts it without a TypeScript loader (as a Lambda starts its bundle). */
async function bundle(name: string, format: "esm" | "cjs" = "esm"): Promise<string> {
  // The bundle lives under node_modules/.cache so Biome, which lints bench/, never sees generated code.
  const outfile = join(
    import.meta.dirname,
    `../node_modules/.cache/hangar-bench/${name}.${format === "esm" ? "mjs" : "cjs"}`,
  );
  await build({
    entryPoints: [join(import.meta.dirname, `${name}.ts`)],
    bundle: true,
    platform: "node",
    format,
    target: "node20",
    outfile,
    // Some bundled dependencies are CommonJS and call require() for Node built-ins.
    ...(format === "esm" ? { banner: { js: BANNER } } : {}),
    logLevel: "warning",
  });
  return outfile;
}

/** (a) and the converter's own peak RSS. */
async function measureConverter(small: string, big: string, compressed: string, zstd: string) {
  // CommonJS: Node starts it about 0.1 s sooner than an ES module, and start-up is part of what is timed.
  const child = await bundle("convert-child", "cjs");
  const outQemu = join(OUT_DIR, "hangar-bench-qemu.raw");
  const outOurs = join(OUT_DIR, "hangar-bench-ours.raw");
  const runOurs = (input: string, output: string, mode = "range") => {
    const r = timed(process.execPath, [child, "qcow2", input, output, mode]);
    return { wall: r.seconds, cpu: r.cpu, report: JSON.parse(r.stdout) as ChildReport };
  };
  const runQemu = (input: string, output: string) =>
    timed("qemu-img", ["convert", "-S", "0", "-f", "qcow2", "-O", "raw", input, output]);

  // Warm the page cache and check the outputs agree before timing anything.
  runQemu(small, outQemu);
  runOurs(small, outOurs);
  sh("cmp", [outQemu, outOurs]); // throws if the outputs differ

  const qemu: number[] = [];
  const qemuCpu: number[] = [];
  const ours: number[] = [];
  const oursCpu: number[] = [];
  const oursInner: number[] = [];
  const oursSeq: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    rmSync(outQemu, { force: true });
    const q = runQemu(small, outQemu);
    qemu.push(q.seconds);
    qemuCpu.push(q.cpu);
    rmSync(outQemu, { force: true });
    const r = runOurs(small, outOurs);
    ours.push(r.wall);
    oursCpu.push(r.cpu);
    oursInner.push(r.report.seconds);
    rmSync(outOurs, { force: true });
    oursSeq.push(runOurs(small, outOurs, "sequential").wall);
    rmSync(outOurs, { force: true });
  }
  /** A/B whole-process times of `runs` conversions of `image`, after one checked against qemu-img's. */
  const pairs = (image: string, runs: number) => {
    runQemu(image, outQemu);
    runOurs(image, outOurs);
    sh("cmp", [outQemu, outOurs]);
    const q: number[] = [];
    const o: number[] = [];
    for (let i = 0; i < runs; i++) {
      rmSync(outQemu, { force: true });
      q.push(runQemu(image, outQemu).seconds);
      rmSync(outOurs, { force: true });
      o.push(runOurs(image, outOurs).wall);
    }
    rmSync(outQemu, { force: true });
    rmSync(outOurs, { force: true });
    return {
      qemuImgMedianSeconds: median(q),
      converterMedianSeconds: median(o),
      ratio: median(o) / median(q),
      samples: { qemu: q, ours: o },
    };
  };
  // The compressed image: inflation bounds both, qemu-img on its thread pool, the converter on libuv's.
  const compressedPairs = pairs(compressed, RUNS);
  // zstd clusters: libzstd on qemu-img's threads against fzstd on the converter's main thread (slow:
  // about 10 s a run, so three runs).
  const zstdPairs = pairs(zstd, Math.min(RUNS, 3));

  const rss1 = runOurs(small, "/dev/null").report.maxRssKiB;
  const rss8 = runOurs(big, "/dev/null").report.maxRssKiB;
  const idle = timed(process.execPath, [
    "-e",
    "process.stdout.write(String(process.resourceUsage().maxRSS))",
  ]);
  const rssIdle = Number(idle.stdout);
  return {
    a: {
      qemuImgMedianSeconds: median(qemu),
      converterMedianSeconds: median(ours),
      converterSequentialMedianSeconds: median(oursSeq),
      converterInProcessMedianSeconds: median(oursInner),
      ratio: median(ours) / median(qemu),
      ratioInProcess: median(oursInner) / median(qemu),
      ratioCpu: median(oursCpu) / median(qemuCpu),
      qemuImgMedianCpuSeconds: median(qemuCpu),
      converterMedianCpuSeconds: median(oursCpu),
      nodeStartupSeconds: idle.seconds,
      outputDir: OUT_DIR,
      ratioSequential: median(oursSeq) / median(qemu),
      converterGBps: GiB / median(ours) / 1e9,
      qemuImgGBps: GiB / median(qemu) / 1e9,
      samples: { qemu, qemuCpu, ours, oursCpu, oursSeq, oursInner },
    },
    compressed: compressedPairs,
    zstd: zstdPairs,
    converterRss: {
      converterMaxRssMiB1G: rss1 / 1024,
      converterMaxRssMiB8G: rss8 / 1024,
      idleNodeRssMiB: rssIdle / 1024,
    },
  };
}

/** The md5 of qemu-img's raw of `image`, kept beside it. */
function rawMd5Of(image: string): string {
  const saved = `${image}.raw-md5`;
  if (existsSync(saved)) return readFileSync(saved, "utf8").trim();
  const raw = join(WORK, "md5-of.raw");
  sh("qemu-img", ["convert", "-O", "raw", image, raw]);
  const md5 = sh("md5sum", [raw]).split(/\s+/)[0] ?? "";
  rmSync(raw);
  writeFileSync(saved, `${md5}\n`);
  return md5;
}

/** The qemu-img raw of the 1 GiB image (sparse file; the plain copy's source) and its md5. */
/** The reference image's raw and its md5. */
function ensureRaw(): { raw: string; md5: string } {
  const { raw, rawMd5 } = ensureReferenceImage();
  return { raw, md5: rawMd5 };
}

function summarizeEndToEnd(e: EndToEndResult) {
  const s = (ms: Measured[]) => ms.map((m) => m.seconds);
  const p = (ms: Measured[]) => ms.map((m) => m.processSeconds);
  const rss = (ms: Measured[]) => ms.map((m) => m.maxRssKiB / 1024);
  const cpu = (ms: Measured[]) => median(ms.map((m) => m.report.cpuSeconds ?? Number.NaN));
  const minio = (ms: Measured[]) => median(ms.map((m) => m.minioCpuSeconds ?? Number.NaN));
  const copy = median(s(e.copy));
  const qcow2 = median(s(e.importQcow2));
  const raw = median(s(e.importRaw));
  return {
    b: {
      importerMaxRssMiB1G: Math.max(...rss(e.importQcow2)),
      importerMaxRssMiB1GRaw: Math.max(...rss(e.importRaw)),
      importerMaxRssMiB8G: e.importBig ? e.importBig.maxRssKiB / 1024 : undefined,
      importerMaxRssMiBCompressed: e.importCompressed.maxRssKiB / 1024,
      importerMaxRssMiBZstd: e.importZstd.maxRssKiB / 1024,
      plainCopyMaxRssMiB: Math.max(...rss(e.copy)),
      writerCopyMaxRssMiB: Math.max(...rss(e.copyWriter)),
      targetMiB: 256,
    },
    c: {
      plainCopyMedianSeconds: copy,
      writerCopyMedianSeconds: median(s(e.copyWriter)),
      ratioQcow2VsWriterCopy: qcow2 / median(s(e.copyWriter)),
      ratioRawVsWriterCopy: raw / median(s(e.copyWriter)),
      importQcow2MedianSeconds: qcow2,
      importRawMedianSeconds: raw,
      ratioQcow2: qcow2 / copy,
      ratioRaw: raw / copy,
      // The least a pass-through could take here: its unavoidable work spread over every core, which
      // storage shares with it.
      passThroughLeastSeconds:
        (e.passThroughFloor.hashCpuSeconds +
          e.passThroughFloor.readCpuSeconds +
          e.passThroughFloor.storageCpuSeconds) /
        availableParallelism(),
      passThroughFloor: e.passThroughFloor,
      ratioQcow2WholeProcess: median(p(e.importQcow2)) / median(p(e.copy)),
      ratioRawWholeProcess: median(p(e.importRaw)) / median(p(e.copy)),
      plainCopyMBps: GiB / copy / 1e6,
      importQcow2MBps: GiB / qcow2 / 1e6,
      importRawMBps: GiB / raw / 1e6,
      import8GVirtualSeconds: e.importBig?.seconds,
      importCompressedSeconds: e.importCompressed.seconds,
      importZstdSeconds: e.importZstd.seconds,
      ratioCompressedVsCopy: e.importCompressed.seconds / copy,
      cpuSeconds: {
        copy: { process: cpu(e.copy), minio: minio(e.copy) },
        copyWriter: { process: cpu(e.copyWriter), minio: minio(e.copyWriter) },
        importQcow2: { process: cpu(e.importQcow2), minio: minio(e.importQcow2) },
        importRaw: { process: cpu(e.importRaw), minio: minio(e.importRaw) },
      },
      target: 1.3,
      samples: {
        copy: s(e.copy),
        copyWriter: s(e.copyWriter),
        importQcow2: s(e.importQcow2),
        importRaw: s(e.importRaw),
        copyProcess: p(e.copy),
        importQcow2Process: p(e.importQcow2),
        importRawProcess: p(e.importRaw),
        rssCopy: rss(e.copy),
        rssCopyWriter: rss(e.copyWriter),
        rssQcow2: rss(e.importQcow2),
        rssRaw: rss(e.importRaw),
      },
    },
  };
}

/** `--only <part>` on the command line, else BENCH_ONLY. */
function onlyPart(): string | undefined {
  const at = process.argv.indexOf("--only");
  return at >= 0 ? process.argv[at + 1] : process.env.BENCH_ONLY;
}

const resultsPath = join(import.meta.dirname, "results.json");

function writeResults(results: object): void {
  writeFileSync(resultsPath, `${JSON.stringify(results, null, 2)}\n`);
  // Keep the committed summary in the project's format so `biome check .` stays clean.
  spawnSync(join(import.meta.dirname, "../node_modules/.bin/biome"), ["format", "--write", resultsPath], {
    stdio: "ignore",
  });
}

/** The bundle budgets: measured, printed, and what results.json keeps of them. */
function runBudgets(log: (line: string) => void) {
  const loadBefore = loadavg();
  const rows = measureBudgets(undefined, INIT_RUNS);
  const findings = budgetFindings(rows);
  log(`budgets measured${findings.length > 0 ? `, ${findings.length} over` : ", all held"}`);
  const round = (x: number) => Math.round(x * 10) / 10;
  const entry = {
    date: new Date().toISOString(),
    node: process.version,
    initRuns: INIT_RUNS,
    loadAverageBefore: loadBefore,
    loadAverageAfter: loadavg(),
    functions: Object.fromEntries(
      rows.map((r: BudgetRow) => [
        r.name,
        {
          jsKiB: round(r.jsKiB),
          jsBudgetKiB: r.jsBudgetKiB,
          initMedianMs: round(r.initMs),
          initBudgetMs: r.initBudgetMs,
          initCpuMedianMs: round(median(r.initCpuSamplesMs)),
          initSamplesMs: r.initSamplesMs.map(round),
          duplicatePackages: r.duplicates,
          ok: r.ok,
        },
      ]),
    ),
    overBudget: findings,
  };
  return { rows, findings, entry };
}

function printBudgets(budgets: ReturnType<typeof runBudgets>): void {
  console.log(
    `bundle budgets: JavaScript per bundle; module init = import of the built bundle with its configuration, ` +
      `median of ${INIT_RUNS} fresh processes (${process.version})`,
  );
  console.table(budgetTable(budgets.rows));
  for (const finding of budgets.findings) console.log(`over budget: ${finding}`);
  if (budgets.findings.length > 0) process.exitCode = 1;
}

async function main(): Promise<void> {
  const only = onlyPart();
  const started = performance.now();
  const log = (line: string) =>
    console.error(`[bench ${((performance.now() - started) / 1000).toFixed(0)} s] ${line}`);
  const runClient = async () => {
    const r = await measureClientEndToEnd({
      runs: Math.max(1, Number(process.env.BENCH_CLIENT_RUNS ?? 4)),
      glance: glanceKinds(),
      log,
    });
    return { rows: clientEndToEndRows(r), result: r };
  };
  if (only === "client") {
    const client = await runClient();
    const previous = existsSync(resultsPath) ? JSON.parse(readFileSync(resultsPath, "utf8")) : {};
    writeResults({ ...previous, client: client.result });
    console.table(client.rows);
    return;
  }
  if (only === "budgets") {
    const budgets = runBudgets(log);
    const previous = existsSync(resultsPath) ? JSON.parse(readFileSync(resultsPath, "utf8")) : {};
    writeResults({ ...previous, budgets: budgets.entry });
    printBudgets(budgets);
    return;
  }
  if (only === "api") {
    // The API under load (bench/api-load.ts): its entry of results.json replaced, the rest kept.
    const api = await measureApiLoad({ repoRoot: join(import.meta.dirname, ".."), log });
    const previous = existsSync(resultsPath) ? JSON.parse(readFileSync(resultsPath, "utf8")) : {};
    writeResults({ ...previous, api });
    console.table(apiLoadTable(api));
    return;
  }
  const measureCpu = async (small: string) => {
    const { raw, md5 } = ensureRaw();
    const runs = Math.max(1, Number(process.env.BENCH_CPU_RUNS ?? 3));
    const repoRoot = join(import.meta.dirname, "..");
    return summarizeCpuFloor(await measureCpuFloor({ qcow2: small, raw, rawMd5: md5, runs, repoRoot, log }));
  };
  if (only === "cpu") {
    const cpu = await measureCpu(ensureImages().small);
    const previous = existsSync(resultsPath) ? JSON.parse(readFileSync(resultsPath, "utf8")) : {};
    writeResults({ ...previous, cpu });
    console.table(cpuTable(cpu));
    return;
  }
  // Before the heavy parts, while the machine is as quiet as it gets.
  const budgets = runBudgets(log);
  const loadBefore = loadavg();
  const { small, big } = ensureImages();
  log(`load average ${loadBefore.map((x) => x.toFixed(2)).join(" ")}`);

  const compressed = ensureCompressedImage();
  const zstd = ensureZstdImage(compressed);
  const converter = only === "e2e" ? undefined : await measureConverter(small, big, compressed, zstd);
  if (converter) log(`(a) done: ratio ${converter.a.ratio.toFixed(3)}`);

  let e2e: ReturnType<typeof summarizeEndToEnd> | undefined;
  if (only !== "a") {
    const child = await bundle("import-child");
    const { raw, md5 } = ensureRaw();
    const result = await measureEndToEnd({
      child,
      qcow2: small,
      raw,
      rawMd5: md5,
      bigQcow2: big,
      compressedQcow2: compressed,
      compressedMd5: rawMd5Of(compressed),
      zstdQcow2: zstd,
      zstdMd5: rawMd5Of(zstd),
      runs: E2E_RUNS,
      repoRoot: join(import.meta.dirname, ".."),
      log,
    });
    e2e = summarizeEndToEnd(result);
  }

  const api =
    only === "a" || only === "e2e"
      ? undefined
      : await measureApiLoad({ repoRoot: join(import.meta.dirname, ".."), log });
  const cpu = only === "a" || only === "e2e" ? undefined : await measureCpu(small);
  const client = only === undefined ? await runClient() : undefined;

  const results = {
    api,
    date: new Date().toISOString(),
    node: process.version,
    runs: RUNS,
    e2eRuns: E2E_RUNS,
    image: "qcow2, 1 GiB virtual, 512 MiB random data, 64 KiB clusters",
    loadAverageBefore: loadBefore,
    loadAverageAfter: loadavg(),
    totalSeconds: (performance.now() - started) / 1000,
    a: converter?.a,
    aCompressed: converter?.compressed,
    aZstd: converter?.zstd,
    b: { ...e2e?.b, ...converter?.converterRss },
    c: e2e?.c,
    budgets: budgets.entry,
    cpu,
    client: client?.result,
  };
  writeResults(results);

  const f = (x: number | undefined) => (x === undefined ? "-" : x.toFixed(3));
  const mib = (x: number | undefined) => (x === undefined ? "-" : x.toFixed(1));
  const cpuPair = (x: { process: number; minio: number } | undefined) =>
    x ? `${x.process.toFixed(1)} + ${x.minio.toFixed(1)}` : "-";
  console.log(
    `runs: (a) ${RUNS}, (c) ${E2E_RUNS} (medians); ${results.image}; ` +
      `load average ${loadBefore.map((x) => x.toFixed(1)).join(" ")} → ${results.loadAverageAfter.map((x) => x.toFixed(1)).join(" ")}`,
  );
  const a = converter?.a;
  const b = results.b;
  const c = e2e?.c;
  console.table({
    "qemu-img convert -S 0 -O raw (s)": f(a?.qemuImgMedianSeconds),
    "converter, ranged reads (s)": f(a?.converterMedianSeconds),
    "converter, sequential stream (s)": f(a?.converterSequentialMedianSeconds),
    "(a) ratio converter / qemu-img": f(a?.ratio),
    "(a) ratio sequential / qemu-img": f(a?.ratioSequential),
    "(a) ratio converter in-process / qemu-img": f(a?.ratioInProcess),
    "(a) ratio CPU seconds converter / qemu-img": f(a?.ratioCpu),
    "zlib-compressed qcow2: qemu-img / converter (s)": `${f(converter?.compressed.qemuImgMedianSeconds)} / ${f(converter?.compressed.converterMedianSeconds)}`,
    "ratio converter / qemu-img, zlib-compressed qcow2": f(converter?.compressed.ratio),
    "zstd-compressed qcow2: qemu-img / converter (s)": `${f(converter?.zstd.qemuImgMedianSeconds)} / ${f(converter?.zstd.converterMedianSeconds)}`,
    "node startup alone (s)": f(a?.nodeStartupSeconds),
    "(b) importer peak RSS, 1 GiB qcow2 (MiB)": mib(b.importerMaxRssMiB1G),
    "(b) importer peak RSS, 8 GiB-virtual qcow2 (MiB)": mib(b.importerMaxRssMiB8G),
    "(b) importer peak RSS, 1 GiB raw (MiB)": mib(b.importerMaxRssMiB1GRaw),
    "plain copy peak RSS, lib-storage / Hangar's writer (MiB)": `${mib(b.plainCopyMaxRssMiB)} / ${mib(b.writerCopyMaxRssMiB)}`,
    "converter process peak RSS, 1 GiB / 8 GiB (MiB)": `${mib(b.converterMaxRssMiB1G)} / ${mib(b.converterMaxRssMiB8G)}`,
    "idle node RSS (MiB)": mib(b.idleNodeRssMiB),
    "plain copy GET → lib-storage Upload, 1 GiB raw (s)": f(c?.plainCopyMedianSeconds),
    "same copy through Hangar's writer (s)": f(c?.writerCopyMedianSeconds),
    "import qcow2 → raw 1 GiB (s)": f(c?.importQcow2MedianSeconds),
    "import raw 1 GiB, pass-through (s)": f(c?.importRawMedianSeconds),
    "(c) ratio import qcow2 / plain copy": f(c?.ratioQcow2),
    "(c) ratio import raw / plain copy (target ≤ 0.5)": f(c?.ratioRaw),
    "(c) pass-through's least here: (md5 + sha512 + read + MinIO serving it) CPU-s / cores (s) / ratio to the copy":
      c
        ? `${f(c.passThroughLeastSeconds)} ((${f(c.passThroughFloor.hashCpuSeconds)} + ${f(c.passThroughFloor.readCpuSeconds)} + ${f(c.passThroughFloor.storageCpuSeconds)}) / ${availableParallelism()}) / ${f(c.passThroughLeastSeconds / c.plainCopyMedianSeconds)}`
        : "-",
    "(c) same, whole processes qcow2 / raw": `${f(c?.ratioQcow2WholeProcess)} / ${f(c?.ratioRawWholeProcess)}`,
    "ratios against the copy through Hangar's writer, qcow2 / raw": `${f(c?.ratioQcow2VsWriterCopy)} / ${f(c?.ratioRawVsWriterCopy)}`,
    "import 8 GiB-virtual qcow2 (s)": f(c?.import8GVirtualSeconds),
    "import zlib-compressed qcow2, once (s) / ratio to the plain copy": `${f(c?.importCompressedSeconds)} / ${f(c?.ratioCompressedVsCopy)}`,
    "importer peak RSS, zlib-compressed qcow2 (MiB)": mib(b.importerMaxRssMiBCompressed),
    "import zstd-compressed qcow2, once (s) / peak RSS (MiB)": `${f(c?.importZstdSeconds)} / ${mib(b.importerMaxRssMiBZstd)}`,
    "CPU s (process + MinIO): copy / writer copy": `${cpuPair(c?.cpuSeconds.copy)} / ${cpuPair(c?.cpuSeconds.copyWriter)}`,
    "CPU s (process + MinIO): import qcow2 / raw": `${cpuPair(c?.cpuSeconds.importQcow2)} / ${cpuPair(c?.cpuSeconds.importRaw)}`,
  });
  if (api) console.table(apiLoadTable(api));
  if (cpu) console.table(cpuTable(cpu));
  if (client) console.table(client.rows);
  printBudgets(budgets);
}

await main();
