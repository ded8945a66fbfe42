/**
 * Converter benchmark (`npm run bench`). Builds a qcow2 of 1 GiB virtual size holding 512 MiB of
 * random data (and an 8 GiB-virtual copy) in bench/.work/, then measures in the same run:
 *  (a) converter qcow2 → dense raw file vs `qemu-img convert -S 0 -O raw`, wall time of whole
 *      processes, alternating A/B, medians of BENCH_RUNS (default 5);
 *  (b) peak RSS of the converter process for the 1 GiB and the 8 GiB-virtual image.
 * (c) end to end on MinIO: see bench/s3.ts (`measureS3`), to be driven by the local stack.
 * Prints a table and writes bench/results.json.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";

const WORK = join(import.meta.dirname, ".work");
const RUNS = Math.max(3, Number(process.env.BENCH_RUNS ?? 5));
// Outputs go to tmpfs when there is one: disk writeback and discard make file timings swing ±100 %.
const OUT_DIR = process.env.BENCH_OUT_DIR ?? (existsSync("/dev/shm") ? "/dev/shm" : WORK);
const MiB = 1 << 20;

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", maxBuffer: 64 * MiB });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] ?? Number.NaN) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

/** 1 GiB virtual, 512 MiB of random data in 64 stretches of 8 MiB, one every 16 MiB. */
function ensureImages(): { small: string; big: string } {
  mkdirSync(WORK, { recursive: true });
  const small = join(WORK, "ref-1g.qcow2");
  const big = join(WORK, "ref-8g.qcow2");
  if (!existsSync(small)) {
    const raw = join(WORK, "ref.raw");
    sh("truncate", ["-s", "1G", raw]);
    for (let i = 0; i < 64; i++) {
      sh("dd", [
        "if=/dev/urandom",
        `of=${raw}`,
        "bs=8M",
        "count=1",
        `seek=${2 * i}`,
        "conv=notrunc",
        "status=none",
      ]);
    }
    sh("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, `${small}.tmp`]);
    sh("mv", [`${small}.tmp`, small]);
    rmSync(raw);
  }
  if (!existsSync(big)) {
    sh("cp", [small, `${big}.tmp`]);
    sh("qemu-img", ["resize", "-f", "qcow2", `${big}.tmp`, "8G"]);
    sh("mv", [`${big}.tmp`, big]);
  }
  return { small, big };
}

/** Runs a process under /usr/bin/time: wall seconds and CPU seconds (user + system) of the whole process. */
function timed(cmd: string, args: string[]): { seconds: number; cpu: number; stdout: string } {
  const timeFile = join(WORK, "time.txt");
  const r = spawnSync("/usr/bin/time", ["-f", "%e %U %S", "-o", timeFile, cmd, ...args], {
    encoding: "utf8",
    maxBuffer: 16 * MiB,
    // Reads and writes share libuv's pool; qemu-img runs more I/O threads than libuv's default 4.
    env: { ...process.env, UV_THREADPOOL_SIZE: "8" },
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

async function main(): Promise<void> {
  const { small, big } = ensureImages();
  // The bundle lives under node_modules/.cache so Biome, which lints bench/, never sees generated code.
  const child = join(import.meta.dirname, "../node_modules/.cache/hangar-bench/convert-child.mjs");
  await build({
    entryPoints: [join(import.meta.dirname, "convert-child.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile: child,
    logLevel: "warning",
  });
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
  rmSync(outQemu, { force: true });
  rmSync(outOurs, { force: true });

  const rss1 = runOurs(small, "/dev/null").report.maxRssKiB;
  const rss8 = runOurs(big, "/dev/null").report.maxRssKiB;
  const idle = timed(process.execPath, [
    "-e",
    "process.stdout.write(String(process.resourceUsage().maxRSS))",
  ]);
  const rssIdle = Number(idle.stdout);

  const GiB = 2 ** 30;
  const results = {
    date: new Date().toISOString(),
    node: process.version,
    runs: RUNS,
    image: "qcow2, 1 GiB virtual, 512 MiB random data, 64 KiB clusters",
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
      loadAverage: loadavg(),
      ratioSequential: median(oursSeq) / median(qemu),
      converterGBps: GiB / median(ours) / 1e9,
      qemuImgGBps: GiB / median(qemu) / 1e9,
      samples: { qemu, qemuCpu, ours, oursCpu, oursSeq, oursInner },
    },
    b: {
      maxRssMiB1G: rss1 / 1024,
      maxRssMiB8G: rss8 / 1024,
      idleNodeRssMiB: rssIdle / 1024,
      targetMiB: 256,
    },
  };
  const resultsPath = join(import.meta.dirname, "results.json");
  writeFileSync(resultsPath, `${JSON.stringify(results, null, 2)}\n`);
  // Keep the committed summary in the project's format so `biome check .` stays clean.
  spawnSync(join(import.meta.dirname, "../node_modules/.bin/biome"), ["format", "--write", resultsPath], {
    stdio: "ignore",
  });
  const f = (x: number) => x.toFixed(3);
  console.log(`runs: ${RUNS} (medians), ${results.image}`);
  console.table({
    "qemu-img convert -S 0 -O raw (s)": f(results.a.qemuImgMedianSeconds),
    "converter, ranged reads (s)": f(results.a.converterMedianSeconds),
    "converter, sequential stream (s)": f(results.a.converterSequentialMedianSeconds),
    "(a) ratio converter / qemu-img": f(results.a.ratio),
    "(a) ratio sequential / qemu-img": f(results.a.ratioSequential),
    "(a) ratio converter in-process / qemu-img": f(results.a.ratioInProcess),
    "(a) ratio CPU seconds converter / qemu-img": f(results.a.ratioCpu),
    "node startup alone (s)": f(results.a.nodeStartupSeconds),
    "(b) peak RSS, 1 GiB image (MiB)": results.b.maxRssMiB1G.toFixed(1),
    "(b) peak RSS, 8 GiB-virtual image (MiB)": results.b.maxRssMiB8G.toFixed(1),
    "idle node RSS (MiB)": results.b.idleNodeRssMiB.toFixed(1),
  });
}

await main();
