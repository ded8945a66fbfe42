/**
 * Module init of two or more builds of the functions, compared on the same machine at the same time:
 * `npx tsx bench/init-ab.ts [--runs N] [--functions api,importer] NAME=DIR NAME=DIR…`, each DIR the output
 * of `node scripts/build.mjs --outdir DIR`. Every round imports each function of each build once on each
 * vCPU (`taskset -c 0` and `-c 1`), builds in turn (their order alternating from round to round), in the
 * fresh processes and with the configuration `npm run bench` uses (bench/budgets.ts). Prints, per function,
 * build and vCPU, the median, least and greatest wall time of the import and its median CPU time, and the
 * ratio of each build's medians to the first's; the load average before and after.
 */
import { join, resolve } from "node:path";
import { initEnv, loadAverageText, measureInit, median, pinnedVcpus } from "./budgets.ts";

function parseArgs(argv: string[]) {
  let runs = 15;
  let functions = ["api", "importer"];
  const builds: { name: string; dir: string }[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    if (arg === "--runs") runs = Number(argv[++i]);
    else if (arg === "--functions") functions = (argv[++i] ?? "").split(",").filter(Boolean);
    else if (/^[\w.-]+=/.test(arg)) {
      const at = arg.indexOf("=");
      builds.push({ name: arg.slice(0, at), dir: resolve(arg.slice(at + 1)) });
    } else throw new Error(`unknown argument ${arg}`);
  }
  if (builds.length === 0 || !(runs > 0)) {
    throw new Error("usage: init-ab.ts [--runs N] [--functions a,b] NAME=DIR [NAME=DIR…]");
  }
  return { runs, functions, builds };
}

const { runs, functions, builds } = parseArgs(process.argv.slice(2));
const vcpus = pinnedVcpus();
const load = loadAverageText;
console.log(`load average before: ${load()}; ${runs} rounds, vCPUs ${vcpus.join(", ")}`);

type Key = `${string}|${string}|${number}`;
const wall = new Map<Key, number[]>();
const cpu = new Map<Key, number[]>();
for (let round = 0; round < runs; round++) {
  const order = round % 2 === 0 ? builds : [...builds].reverse();
  for (const v of vcpus) {
    for (const fn of functions) {
      for (const b of order) {
        const r = measureInit(join(b.dir, fn, "index.mjs"), initEnv(fn), 1, { cpu: v });
        const key: Key = `${fn}|${b.name}|${v}`;
        wall.set(key, [...(wall.get(key) ?? []), ...r.samples]);
        cpu.set(key, [...(cpu.get(key) ?? []), ...r.cpuSamples]);
      }
    }
  }
  process.stderr.write(`round ${round + 1}/${runs}\n`);
}

const rows: Record<string, Record<string, string>> = {};
for (const fn of functions) {
  for (const v of vcpus) {
    const first = builds[0]?.name ?? "";
    const base = median(wall.get(`${fn}|${first}|${v}`) ?? []);
    const baseCpu = median(cpu.get(`${fn}|${first}|${v}`) ?? []);
    for (const b of builds) {
      const w = wall.get(`${fn}|${b.name}|${v}`) ?? [];
      const c = cpu.get(`${fn}|${b.name}|${v}`) ?? [];
      rows[`${fn} ${b.name} vCPU${v}`] = {
        "init ms (median)": median(w).toFixed(1),
        least: Math.min(...w).toFixed(1),
        greatest: Math.max(...w).toFixed(1),
        "CPU ms (median)": median(c).toFixed(1),
        "wall ratio": (median(w) / base).toFixed(2),
        "CPU ratio": (median(c) / baseCpu).toFixed(2),
      };
    }
  }
}
console.table(rows);
console.log(`load average after: ${load()}`);
