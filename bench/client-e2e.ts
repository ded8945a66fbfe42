/**
 * The client's end to end (`BENCH_ONLY=client`, or run this file directly): a local stack started as
 * `npm start` starts it (the built handlers in their own processes, MinIO's webhook through the durable
 * event queue), then, as a client does with the `hangar` CLI's own code: create the image (inspected
 * first), upload the file through the returned link (the multipart plan, parts in parallel), poll show
 * until `active`. The reference image is a qcow2 of 1 GiB virtual size holding 512 MiB of random data,
 * stored as raw. Repeated BENCH_CLIENT_RUNS times (default 4) in one stack, so a slowdown from one run
 * to the next shows, interleaved with the bench's plain copy of the same output bytes (SDK GET → Upload)
 * and, when it can run here, a real Glance (bench/glance-peer.ts) driven the same way.
 *
 * The time from the object landing to `active` is broken down with the functions' own log lines (their
 * timestamps): event delivery (the API's `multipart upload completed` → the importer invoked, taken from
 * `import result`'s `startedAt`), the lease (→ `import started`), the import (→ `import inspected`), the
 * final write and clean-up (→ `import finished`), and the client seeing it (→ the show that says `active`).
 * CPU seconds per run come from /proc/<pid>/stat of the importer, the api, MinIO and DynamoDB Local.
 */

import { createReadStream, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { PutBucketNotificationConfigurationCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { build } from "esbuild";
import { HangarClient } from "../client/lib/api.ts";
import { uploadFile } from "../client/lib/upload.ts";
import { MAX_POLL_INTERVAL_MS } from "../client/lib/wait.ts";
import { freePort } from "../infra/local/services.ts";
import { hangarEnv, type LocalStack, startStack } from "../infra/local/stack.ts";
import { median } from "./budgets.ts";
import { runJsonChild } from "./child.ts";
import { benchChildEnv, purgeVersions } from "./e2e.ts";
import { type GlancePeer, type GlanceRun, startGlance } from "./glance-peer.ts";
import { busiestThread, ensureReferenceImage, procCpuSeconds, threadCpuSeconds } from "./reference.ts";

const MiB = 1 << 20;
/** How often the bench's client asks for the image while it waits (the CLI starts at 500 ms and grows). */
const POLL_MS = Number(process.env.BENCH_CLIENT_POLL_MS ?? 100);

export interface Breakdown {
  /** create → the upload's last call answered (inspection, create, parts, complete). */
  upload: number;
  /** the API's `multipart upload completed` → the importer invoked for the object. */
  eventDelivery: number;
  /** of which: MinIO's webhook → the receiver has the event queued on disk. */
  toReceiver: number;
  /** invoked → `import started` (object head, record read, lease write). */
  lease: number;
  /** `import started` → `import inspected`: read, convert, write, digests. */
  import: number;
  /** `import inspected` → `import finished`: the final record write, clean-up of the staged object. */
  finalWrite: number;
  /** `import finished` → the client's show that says `active`. */
  clientSees: number;
  /** upload answered → `active` seen: what the user waits after the upload. */
  afterUpload: number;
}

export interface HangarRun {
  /** create → `active` seen by the client (s). */
  seconds: number;
  breakdown: Breakdown;
  /** What the CLI's own wait (250 ms, growing 1.25× to 1 s) would have added after `active` (s). */
  cliWaitLag: number;
  /** The same with the CLI's earlier wait (500 ms growing to 5 s). */
  cliWaitLagBefore: number;
  /** CPU seconds spent during the run, per process. */
  cpu: Record<string, number>;
  /** The same, split: create → the upload answered, and from then until `active` is seen. */
  cpuUpload: Record<string, number>;
  cpuAfter: Record<string, number>;
}

export interface ClientEndToEndResult {
  runs: number;
  loadBefore: number[];
  loadAfter: number[];
  hangar: HangarRun[];
  /** With BENCH_CLIENT_QUEUED_TOO=1: runs with events through MinIO's queued target only (as before). */
  queuedOnly: HangarRun[];
  copy: { seconds: number; cpu: number; minioCpu: number }[];
  glance: Record<string, GlanceRun[]>;
  glanceSkipped: string[];
}

interface LogLine {
  at: number;
  text: string;
}

const SRC_RAW = "bench/src/ref-1g.raw";

/** The JSON of a function's log line (`[importer] {...}`), or undefined. */
function fnJson(line: string, fn: string): Record<string, unknown> | undefined {
  if (!line.startsWith(`[${fn}] {`)) return undefined;
  try {
    return JSON.parse(line.slice(fn.length + 3)) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** Epoch ms of the first `fn` line whose message is `message` and that names image `id`. */
function stamp(lines: readonly LogLine[], fn: string, message: string, id: string): number {
  for (const l of lines) {
    const j = fnJson(l.text, fn);
    if (j?.message === message && (j.imageId === id || j.image_id === id)) {
      return Date.parse(String(j.timestamp ?? "")) || l.at;
    }
  }
  return Number.NaN;
}

function breakdownOf(
  lines: readonly LogLine[],
  id: string,
  t: { start: number; uploaded: number; seen: number },
): Breakdown {
  const completed = stamp(lines, "api", "multipart upload completed", id);
  const received = lines.find((l) => l.text.startsWith("storage event received") && l.text.includes(id))?.at;
  let invoked = Number.NaN;
  for (const l of lines) {
    const j = fnJson(l.text, "importer");
    if (j?.message === "import result" && j.imageId === id && typeof j.startedAt === "string")
      invoked = Date.parse(j.startedAt);
  }
  const started = stamp(lines, "importer", "import started", id);
  const inspected = stamp(lines, "importer", "import inspected", id);
  const finished = stamp(lines, "importer", "import finished", id);
  const s = (a: number, b: number) => (b - a) / 1000;
  return {
    upload: s(t.start, t.uploaded),
    eventDelivery: s(completed, invoked),
    toReceiver: s(completed, received ?? Number.NaN),
    lease: s(invoked, started),
    import: s(started, inspected),
    finalWrite: s(inspected, finished),
    clientSees: s(finished, t.seen),
    afterUpload: s(t.uploaded, t.seen),
  };
}

/**
 * When the CLI's wait (a show at once, then every `first` ms growing 1.25× up to `most`) first sees
 * `active`: client/lib/wait.ts now waits 250 ms growing to MAX_POLL_INTERVAL_MS, it used to wait 500 ms
 * growing to 5 s.
 */
function cliSeesAt(uploaded: number, active: number, first = 250, most = MAX_POLL_INTERVAL_MS): number {
  let at = uploaded;
  let interval = first;
  while (at < active) {
    at += interval;
    interval = Math.min(most, Math.round(interval * 1.25));
  }
  return at;
}

/** Pids of the stack's processes whose CPU a run is charged with. */
function stackPids(stack: LocalStack, home: string): Record<string, number | undefined> {
  const children = JSON.parse(readFileSync(join(home, "children.json"), "utf8")) as {
    name: string;
    pid: number;
  }[];
  return {
    importer: stack.lambda.fn("importer").pid,
    api: stack.lambda.fn("api").pid,
    minio: children.find((c) => c.name === "MinIO")?.pid,
    dynamodb: children.find((c) => c.name === "DynamoDB Local")?.pid,
  };
}

function cpuOf(pids: Record<string, number | undefined>): Record<string, number> {
  const out: Record<string, number> = {
    client: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6,
  };
  for (const [name, pid] of Object.entries(pids)) out[name] = procCpuSeconds(pid) ?? Number.NaN;
  return out;
}

const diff = (a: Record<string, number>, b: Record<string, number>) =>
  Object.fromEntries(Object.keys(b).map((k) => [k, (b[k] ?? 0) - (a[k] ?? 0)]));

/** Bundles bench/import-child.ts (the plain copy) into a temporary folder; Node runs it without a loader. */
async function bundleCopyChild(dir: string): Promise<string> {
  const outfile = join(dir, "import-child.mjs");
  await build({
    entryPoints: [join(import.meta.dirname, "import-child.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile,
    banner: {
      js: "import { createRequire as __benchCreateRequire } from 'module'; const require = __benchCreateRequire(import.meta.url);",
    },
    logLevel: "warning",
  });
  return outfile;
}

async function runChild(
  argv: string[],
  env: Record<string, string>,
): Promise<{ seconds: number; cpuSeconds: number }> {
  const { report } = await runJsonChild<{ seconds: number; cpuSeconds: number }>(
    process.execPath,
    argv,
    env,
    argv.join(" "),
  );
  return report;
}

export interface ClientEndToEndOptions {
  runs: number;
  /** Glance peers to run ("file", "s3"); empty for none. */
  glance: readonly ("file" | "s3")[];
  log: (line: string) => void;
  /** Also run each round with events through MinIO's queued target only (what npm start did before). */
  queuedOnlyToo?: boolean;
}

/** Routes the bucket's staging events to these MinIO webhook targets (see infra/local/services.ts). */
async function routeEvents(s3: S3Client, bucket: string, targets: string[]): Promise<void> {
  await s3.send(
    new PutBucketNotificationConfigurationCommand({
      Bucket: bucket,
      NotificationConfiguration: {
        QueueConfigurations: targets.map((id) => ({
          Id: `bench-${id}`,
          QueueArn: `arn:minio:sqs::${id}:webhook`,
          Events: ["s3:ObjectCreated:*"],
          Filter: { Key: { FilterRules: [{ Name: "prefix", Value: "staging/" }] } },
        })),
      },
    }),
  );
}

export async function measureClientEndToEnd(opts: ClientEndToEndOptions): Promise<ClientEndToEndResult> {
  const { qcow2, raw, rawMd5 } = ensureReferenceImage();
  const home = await mkdtemp(join(tmpdir(), "hangar-bench-client-"));
  const lines: LogLine[] = [];
  const ports = new Set<number>();
  while (ports.size < 3) ports.add(await freePort());
  const [apiPort = 0, s3Port = 0, dynamodbPort = 0] = [...ports];
  let stack: LocalStack | undefined;
  const glances: GlancePeer[] = [];
  const glanceSkipped: string[] = [];
  const onSignal = () => {
    void Promise.allSettled([stack?.stop(), ...glances.map((g) => g.stop())]).finally(() =>
      process.exit(130),
    );
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const loadBefore = loadavg();
  try {
    const t0 = performance.now();
    // As `npm start` starts it: durable bucket events, the redrive at start and every minute, hourly sweeps.
    stack = await startStack({
      home,
      cacheDir: resolve(process.env.HANGAR_CACHE ?? join(import.meta.dirname, "..", ".hangar", "cache")),
      apiPort,
      s3Port,
      dynamodbPort,
      reset: true,
      log: (text) => lines.push({ at: Date.now(), text }),
    });
    const info = stack.info;
    opts.log(`local stack up in ${((performance.now() - t0) / 1000).toFixed(1)} s (${info.apiUrl})`);
    const s3 = new S3Client({
      endpoint: info.s3Endpoint,
      region: info.region,
      forcePathStyle: true,
      credentials: { accessKeyId: info.accessKeyId, secretAccessKey: info.secretAccessKey },
    });
    await new Upload({
      client: s3,
      params: { Bucket: info.bucket, Key: SRC_RAW, Body: createReadStream(raw, { highWaterMark: MiB }) },
      partSize: 16 * MiB,
      queueSize: 4,
    }).done();
    const copyChild = await bundleCopyChild(home);
    const childEnv = {
      ...benchChildEnv(),
      ...hangarEnv(info, stack.signingKey),
      AWS_ACCESS_KEY_ID: info.accessKeyId,
      AWS_SECRET_ACCESS_KEY: info.secretAccessKey,
    };

    for (const kind of opts.glance) {
      try {
        glances.push(
          await startGlance({
            kind,
            workDir: join(import.meta.dirname, ".work", `glance-${kind}`),
            s3: {
              endpoint: info.s3Endpoint,
              accessKey: info.accessKeyId,
              secretKey: info.secretAccessKey,
              minioPid: stackPids(stack, home).minio,
            },
            log: opts.log,
          }),
        );
      } catch (err) {
        const why = `Glance (${kind} store) skipped: ${err instanceof Error ? err.message : String(err)}`;
        glanceSkipped.push(why);
        opts.log(why);
      }
    }

    const client = new HangarClient(info.apiUrl, info.tokens.alice);
    const stateDir = join(home, "client-state");
    const hangarOnce = async (i: number): Promise<HangarRun> => {
      const pids = stackPids(stack as LocalStack, home);
      const cpu0 = cpuOf(pids);
      const threads0 = threadCpuSeconds(pids.importer);
      const own0 = threadCpuSeconds(process.pid);
      const start = Date.now();
      const result = await uploadFile(client, {
        path: qcow2,
        name: `bench-client-${i}`,
        containerFormat: "bare",
        parallel: 4,
        stateDir,
        wait: false,
      });
      const uploaded = Date.now();
      const cpu1 = cpuOf(pids);
      const threads1 = threadCpuSeconds(pids.importer);
      const own1 = threadCpuSeconds(process.pid);
      const id = result.image_id;
      let seen = 0;
      let active = false;
      while (!active) {
        const image = await client.getImage(id);
        seen = Date.now();
        if (image.status === "active") {
          if (image.checksum !== rawMd5)
            throw new Error(`image ${id}: md5 ${image.checksum}, expected ${rawMd5}`);
          active = true;
        } else if (image.status !== "queued" && image.status !== "importing") {
          throw new Error(`image ${id} ended ${image.status}: ${JSON.stringify(image.failure)}`);
        } else await new Promise((r) => setTimeout(r, POLL_MS));
      }
      const cpu2 = cpuOf(pids);
      const threads2 = threadCpuSeconds(pids.importer);
      const cpu = diff(cpu0, cpu2);
      // The importer's busiest thread: on cores of its own, the import cannot take less than this.
      cpu.importerBusiestThread = busiestThread(threads0, threads2);
      const cpuUpload = diff(cpu0, cpu1);
      // The client's busiest thread (this process's: the client's code, and the stack's gateway stand-in).
      cpuUpload.clientBusiestThread = busiestThread(own0, own1);
      const cpuAfter = diff(cpu1, cpu2);
      cpuAfter.importerBusiestThread = busiestThread(threads1, threads2);
      // The `import result` line trails the record's last write (by more on a busy machine).
      const resultLogged = () =>
        lines.some(
          (l) =>
            l.text.startsWith("[importer] {") && l.text.includes('"import result"') && l.text.includes(id),
        );
      for (let waited = 0; !resultLogged() && waited < 10_000; waited += 50)
        await new Promise((r) => setTimeout(r, 50));
      const breakdown = breakdownOf(lines, id, { start, uploaded, seen });
      await client.deleteImage(id);
      return {
        seconds: (seen - start) / 1000,
        breakdown,
        cliWaitLag: (cliSeesAt(uploaded, seen) - seen) / 1000,
        cliWaitLagBefore: (cliSeesAt(uploaded, seen, 500, 5000) - seen) / 1000,
        cpu,
        cpuUpload,
        cpuAfter,
      };
    };
    const minioPid = stackPids(stack, home).minio;
    const copyOnce = async () => {
      const before = procCpuSeconds(minioPid) ?? Number.NaN;
      const r = await runChild([copyChild, "copy", SRC_RAW, "bench/out/plain-copy"], childEnv);
      const minioCpu = (procCpuSeconds(minioPid) ?? Number.NaN) - before;
      await purgeVersions(s3, info.bucket, "bench/out/plain-copy");
      return { seconds: r.seconds, cpu: r.cpuSeconds, minioCpu };
    };

    const hangar: HangarRun[] = [];
    const copy: ClientEndToEndResult["copy"] = [];
    const glance: Record<string, GlanceRun[]> = Object.fromEntries(glances.map((g) => [g.kind, []]));
    const queuedOnly: HangarRun[] = [];
    const logRun = (what: string, i: number, h: HangarRun) => {
      const b = h.breakdown;
      opts.log(
        `run ${i + 1}/${opts.runs} ${what}: ${h.seconds.toFixed(2)} s (upload ${b.upload.toFixed(2)}, ` +
          `delivery ${b.eventDelivery.toFixed(2)}, lease ${b.lease.toFixed(2)}, import ${b.import.toFixed(2)}, ` +
          `final ${b.finalWrite.toFixed(2)}, seen ${b.clientSees.toFixed(2)}); CPU ${cpuLine(h.cpu)}`,
      );
    };
    for (let i = 0; i < opts.runs; i++) {
      if (opts.queuedOnlyToo) {
        // The same stack with bucket events routed to MinIO's queued target only, as before the immediate one.
        await routeEvents(s3, info.bucket, ["HANGAR"]);
        const q = await hangarOnce(i);
        queuedOnly.push(q);
        logRun("Hangar, queued events only", i, q);
        await routeEvents(s3, info.bucket, ["HANGAR", "HANGARNOW"]);
      }
      const h = await hangarOnce(i);
      hangar.push(h);
      logRun("Hangar", i, h);
      for (const g of glances) {
        const r = await g.run(qcow2, rawMd5, POLL_MS);
        glance[g.kind]?.push(r);
        opts.log(
          `run ${i + 1}/${opts.runs} Glance ${g.kind}: ${r.seconds.toFixed(2)} s (create ${r.create.toFixed(2)}, ` +
            `stage ${r.stage.toFixed(2)}, import ${r.import.toFixed(2)}); CPU glance ${r.cpu.glance.toFixed(1)} + MinIO ${(r.cpu.minio ?? 0).toFixed(1)}`,
        );
      }
      const c = await copyOnce();
      copy.push(c);
      opts.log(`run ${i + 1}/${opts.runs} plain copy: ${c.seconds.toFixed(2)} s`);
    }
    s3.destroy();
    return {
      runs: opts.runs,
      loadBefore,
      loadAfter: loadavg(),
      hangar,
      queuedOnly,
      copy,
      glance,
      glanceSkipped,
    };
  } catch (err) {
    const tail = lines
      .slice(-30)
      .map((l) => l.text)
      .join("\n");
    throw new Error(
      `client end-to-end bench failed: ${err instanceof Error ? err.message : String(err)}\n${tail}`,
      {
        cause: err,
      },
    );
  } finally {
    await Promise.allSettled(glances.map((g) => g.stop()));
    await stack?.stop();
    await rm(home, { recursive: true, force: true });
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

const cpuLine = (cpu: Record<string, number>) =>
  Object.entries(cpu)
    .map(([k, v]) => `${k} ${v.toFixed(1)}`)
    .join(", ");

/** The vCPUs a stage's own processes would have with storage elsewhere (a 3008 MB Lambda has two). */
const OWN_CORES = 2;

/**
 * A stage's wall time with storage's CPU taken out: `wall` × (the stage's CPU without storage's) / (all
 * of it), never less than its busiest thread's CPU (one thread cannot go faster than that) nor than the
 * rest of its CPU spread over OWN_CORES. It rests on the stage being CPU-bound on the shared cores (its
 * processes' CPU is printed beside it): on a CPU-bound machine a stage lasts as long as the CPU it needs
 * takes there, and with storage on cores of its own, storage's requests cost the stage no CPU time.
 */
export function withoutStorage(wall: number, cpu: { all: number; storage: number; busiest: number }): number {
  if (!(cpu.all > 0)) return wall;
  const rest = cpu.all - cpu.storage;
  return Math.min(wall, Math.max((wall * rest) / cpu.all, cpu.busiest, rest / OWN_CORES));
}

const sumOf = (cpu: Record<string, number>, keys: readonly string[]) =>
  keys.reduce((t, k) => t + (Number.isFinite(cpu[k]) ? (cpu[k] as number) : 0), 0);
/** The processes a Hangar run is charged with; MinIO is storage. */
const HANGAR_PROCS = ["client", "importer", "minio", "api", "dynamodb"] as const;

/** A Hangar run where storage does not share the cores: each of its two stages by `withoutStorage`. */
export function hangarWithoutStorage(h: HangarRun): { upload: number; after: number; seconds: number } {
  const upload = withoutStorage(h.breakdown.upload, {
    all: sumOf(h.cpuUpload, HANGAR_PROCS),
    storage: h.cpuUpload.minio ?? 0,
    busiest: h.cpuUpload.clientBusiestThread ?? 0,
  });
  const after = withoutStorage(h.breakdown.afterUpload, {
    all: sumOf(h.cpuAfter, HANGAR_PROCS),
    storage: h.cpuAfter.minio ?? 0,
    busiest: h.cpuAfter.importerBusiestThread ?? 0,
  });
  return { upload, after, seconds: upload + after };
}

/** A Glance run where storage does not share the cores: only its import stage uses MinIO (S3 store). */
export function glanceWithoutStorage(g: GlanceRun): number {
  const st = g.cpu.importStage;
  if (st.minio === undefined) return g.seconds;
  const imported = withoutStorage(g.import, {
    all: st.glance + st.minio,
    storage: st.minio,
    busiest: st.busiestThread,
  });
  return g.create + g.stage + imported;
}

/** Targets of #16: Hangar / Glance on the same storage kind. */
const TARGETS: Record<string, number> = { file: 0.8, s3: 0.6 };

/** The rows `npm run bench` prints for the client's end to end. */
export function clientEndToEndRows(r: ClientEndToEndResult): Record<string, string> {
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "-");
  const med = (xs: number[]) => median(xs);
  const all = (xs: number[]) => xs.map(f).join(" ");
  const h = r.hangar;
  const hangar = med(h.map((x) => x.seconds));
  const apart = h.map(hangarWithoutStorage);
  const cpuRow = (runs: Record<string, number>[]) => {
    const m = (k: string) => med(runs.map((c) => c[k] ?? Number.NaN));
    return `${HANGAR_PROCS.map((k) => f(m(k))).join(" + ")} = ${f(med(runs.map((c) => sumOf(c, HANGAR_PROCS))))}`;
  };
  const part = (k: keyof Breakdown) =>
    `${f(med(h.map((x) => x.breakdown[k])))}  [${all(h.map((x) => x.breakdown[k]))}]`;
  const cpuMed = (k: string) => med(h.map((x) => x.cpu[k] ?? Number.NaN));
  const q = r.queuedOnly;
  const qpart = (k: keyof Breakdown) =>
    `${f(med(q.map((x) => x.breakdown[k])))}  [${all(q.map((x) => x.breakdown[k]))}]`;
  const queuedRows: Record<string, string> =
    q.length === 0
      ? {}
      : {
          "same, events through MinIO's queued target only (before): create → active (s)": `${f(med(q.map((x) => x.seconds)))}  [${all(q.map((x) => x.seconds))}]`,
          "  event delivery, queued target only": qpart("eventDelivery"),
          "  after the upload, queued target only": qpart("afterUpload"),
          "  ratio now / before, pairs": all(h.map((x, i) => x.seconds / (q[i]?.seconds ?? Number.NaN))),
        };
  const rows: Record<string, string> = {
    "client e2e Hangar: create → active (s), median [runs]": `${f(hangar)}  [${all(h.map((x) => x.seconds))}]`,
    "  upload (create, parts, complete)": part("upload"),
    "  after the upload, until the client sees active": part("afterUpload"),
    "  event delivery (complete → importer invoked)": part("eventDelivery"),
    "    of which MinIO → receiver queued": part("toReceiver"),
    "  lease (head, read, lease write)": part("lease"),
    "  import (read, convert, write, digests)": part("import"),
    "  final write + clean-up": part("finalWrite"),
    "  client sees it (last poll)": part("clientSees"),
    "  the CLI's own wait would add (s), now / before": `${f(med(h.map((x) => x.cliWaitLag)))} / ${f(med(h.map((x) => x.cliWaitLagBefore)))}  [${all(h.map((x) => x.cliWaitLag))} / ${all(h.map((x) => x.cliWaitLagBefore))}]`,
    "  CPU s per run: client + importer + MinIO + api + DynamoDB Local = total": cpuRow(h.map((x) => x.cpu)),
    "    upload stage": cpuRow(h.map((x) => x.cpuUpload)),
    "    after the upload": cpuRow(h.map((x) => x.cpuAfter)),
    "  CPU s of the busiest thread: client's in the upload / importer's after it": `${f(med(h.map((x) => x.cpuUpload.clientBusiestThread ?? Number.NaN)))} / ${f(cpuMed("importerBusiestThread"))}`,
    "  where storage does not share the cores (derived, s): upload + after it = create → active": `${f(med(apart.map((x) => x.upload)))} + ${f(med(apart.map((x) => x.after)))} = ${f(med(apart.map((x) => x.seconds)))}  [${all(apart.map((x) => x.seconds))}]`,
    ...queuedRows,
    "plain copy GET → Upload, 1 GiB raw (s)": `${f(med(r.copy.map((c) => c.seconds)))}  [${all(r.copy.map((c) => c.seconds))}]`,
    "  CPU s: copy + MinIO": `${f(med(r.copy.map((c) => c.cpu)))} + ${f(med(r.copy.map((c) => c.minioCpu)))}`,
  };
  for (const [kind, runs] of Object.entries(r.glance)) {
    if (runs.length === 0) continue;
    const g = med(runs.map((x) => x.seconds));
    rows[`Glance 25.1, ${kind} store: create → active (s)`] = `${f(g)}  [${all(runs.map((x) => x.seconds))}]`;
    rows[`  ${kind}: create / stage / import (s)`] =
      `${f(med(runs.map((x) => x.create)))} / ${f(med(runs.map((x) => x.stage)))} / ${f(med(runs.map((x) => x.import)))}`;
    rows[`  ${kind}: CPU s per run, curl + glance-api (qemu-img included) + MinIO`] =
      `${f(med(runs.map((x) => x.cpu.client)))} + ${f(med(runs.map((x) => x.cpu.glance)))} + ${f(med(runs.map((x) => x.cpu.minio ?? 0)))} (busiest thread ${f(med(runs.map((x) => x.cpu.busiestThread)))})`;
    rows[`    ${kind}, import stage: glance-api + MinIO (busiest thread)`] =
      `${f(med(runs.map((x) => x.cpu.importStage.glance)))} + ${f(med(runs.map((x) => x.cpu.importStage.minio ?? 0)))} (${f(med(runs.map((x) => x.cpu.importStage.busiestThread)))})`;
    // Pairs: run i of Hangar against run i of Glance, taken back to back.
    const ratios = runs.map((x, i) => (h[i]?.seconds ?? Number.NaN) / x.seconds);
    rows[`Hangar / Glance ${kind} (target ≤ ${TARGETS[kind]}×): medians, [pairs]`] =
      `${f(hangar / g)}  [${all(ratios)}]`;
    const gApart = runs.map(glanceWithoutStorage);
    const apartRatios = gApart.map((x, i) => (apart[i]?.seconds ?? Number.NaN) / x);
    rows[`  the same where storage does not share the cores (derived; Glance ${kind} ${f(med(gApart))} s)`] =
      `${f(med(apart.map((x) => x.seconds)) / med(gApart))}  [${all(apartRatios)}]`;
  }
  for (const why of r.glanceSkipped) rows[why] = "";
  return rows;
}

/** `BENCH_CLIENT_GLANCE=0` runs no Glance; `file` or `s3` runs that one; default both where they can run. */
export function glanceKinds(): ("file" | "s3")[] {
  const v = process.env.BENCH_CLIENT_GLANCE ?? "file,s3";
  if (v === "0" || v === "") return [];
  return v.split(",").filter((k): k is "file" | "s3" => k === "file" || k === "s3");
}

async function main(): Promise<void> {
  const started = performance.now();
  const log = (line: string) =>
    console.error(`[client-e2e ${((performance.now() - started) / 1000).toFixed(0)} s] ${line}`);
  const runs = Math.max(1, Number(process.env.BENCH_CLIENT_RUNS ?? 4));
  const r = await measureClientEndToEnd({
    runs,
    glance: glanceKinds(),
    log,
    queuedOnlyToo: process.env.BENCH_CLIENT_QUEUED_TOO === "1",
  });
  console.log(
    `client end to end, ${runs} runs; load average ${r.loadBefore.map((x) => x.toFixed(1)).join(" ")} → ` +
      `${r.loadAfter.map((x) => x.toFixed(1)).join(" ")}`,
  );
  console.table(clientEndToEndRows(r));
  if (process.env.BENCH_CLIENT_JSON) {
    mkdirSync(join(import.meta.dirname, ".work"), { recursive: true });
    writeFileSync(process.env.BENCH_CLIENT_JSON, `${JSON.stringify(r, null, 2)}\n`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  await main();
}
