/**
 * (b) and (c) of `npm run bench`: the real importer against its own local stack (MinIO + DynamoDB Local
 * + Hangar's API, started with `startStack` in a temporary home on free ports).
 *
 * The stack's bucket notification is removed right after start, so MinIO delivers no events and only the
 * bench's child processes import (no double import, and the bench controls timing). Each measured import
 * is a fresh image created through the API; its staged object is a server-side copy (not timed) of a
 * source uploaded once under `bench/`, outside `staging/`. Every import and every plain copy runs in its
 * own child process (bench/import-child.ts) that reports its in-process seconds and peak RSS.
 */

import { createReadStream, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  ListObjectVersionsCommand,
  PutBucketNotificationConfigurationCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { imageKey, stagingKey, stagingPrefix } from "../functions/core/image/image.ts";
import { freePort } from "../infra/local/services.ts";
import { hangarEnv, type LocalStack, startStack } from "../infra/local/stack.ts";
import { runJsonChild } from "./child.ts";

/**
 * Deletes every version under `prefix` (one listing page: the bench's keys hold a few versions each). The
 * stack's bucket keeps versions, so a delete by key alone would leave each 1 GiB behind a delete marker.
 */
export async function purgeVersions(client: S3Client, bucket: string, prefix: string): Promise<void> {
  const out = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix }));
  for (const v of [...(out.Versions ?? []), ...(out.DeleteMarkers ?? [])]) {
    await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: v.Key, VersionId: v.VersionId }));
  }
}

export interface ChildReport {
  seconds: number;
  maxRssKiB: number;
  size?: number;
  checksum?: string;
  osHashValue?: string;
  converted?: boolean;
  diskFormat?: string;
  /** CPU seconds of the whole child process (all threads, start-up included). */
  cpuSeconds?: number;
  /** CPU seconds of the operation alone, all threads (the floor and the pieces: `floor`, `socket-get`). */
  opCpuSeconds?: number;
  /** Sampled peaks of the child's main isolate (MiB). */
  peak?: { heapUsedMiB: number; externalMiB: number; arrayBuffersMiB: number };
}

export interface Measured {
  /** In-process seconds of the operation (client setup to last byte stored / record active). */
  seconds: number;
  /** Whole child process, Node startup and module loading included. */
  processSeconds: number;
  maxRssKiB: number;
  report: ChildReport;
  /** CPU seconds MinIO spent while the child ran (it shares the machine's cores with the child). */
  minioCpuSeconds?: number;
}

export interface EndToEndInput {
  /** Bundled bench/import-child.ts. */
  child: string;
  qcow2: string;
  /** `qemu-img convert -O raw` of `qcow2`: the importer's expected output, and the plain copy's input. */
  raw: string;
  rawMd5: string;
  /** The 8 GiB-virtual qcow2 (imported once, for peak RSS). */
  bigQcow2: string;
  /** The zlib-compressed qcow2 (a cloud image's layout, imported once) and the md5 of its raw. */
  compressedQcow2: string;
  compressedMd5: string;
  /** The same with zstd-compressed clusters, imported once. */
  zstdQcow2: string;
  zstdMd5: string;
  runs: number;
  repoRoot: string;
  log: (line: string) => void;
}

export interface EndToEndResult {
  copy: Measured[];
  copyWriter: Measured[];
  importQcow2: Measured[];
  importRaw: Measured[];
  importBig: Measured | undefined;
  importCompressed: Measured;
  importZstd: Measured;
  /** CPU seconds of the work a pass-through of the 1 GiB raw cannot do without, each measured alone. */
  passThroughFloor: { hashCpuSeconds: number; readCpuSeconds: number; storageCpuSeconds: number };
  stackLog: string;
}

const SRC = {
  qcow2: "bench/src/ref-1g.qcow2",
  raw: "bench/src/ref-1g.raw",
  big: "bench/src/ref-8g.qcow2",
  compressed: "bench/src/ref-1g-c.qcow2",
  zstd: "bench/src/ref-1g-z.qcow2",
};

export async function measureEndToEnd(input: EndToEndInput): Promise<EndToEndResult> {
  const home = await mkdtemp(join(tmpdir(), "hangar-bench-"));
  const stackLog: string[] = [];
  const ports = new Set<number>();
  while (ports.size < 3) ports.add(await freePort());
  const [apiPort = 0, s3Port = 0, dynamodbPort = 0] = [...ports];
  let stack: LocalStack | undefined;
  let s3: S3Client | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    input.log(`${signal}: stopping the bench stack`);
    void (stack?.stop() ?? Promise.resolve())
      .then(() => rm(home, { recursive: true, force: true }))
      .finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const t0 = performance.now();
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
    input.log(`local stack up in ${((performance.now() - t0) / 1000).toFixed(1)} s (${info.apiUrl})`);
    s3 = new S3Client({
      endpoint: info.s3Endpoint,
      region: info.region,
      forcePathStyle: true,
      credentials: { accessKeyId: info.accessKeyId, secretAccessKey: info.secretAccessKey },
    });
    // No events from MinIO: the bench's children are the only importers.
    await s3.send(
      new PutBucketNotificationConfigurationCommand({ Bucket: info.bucket, NotificationConfiguration: {} }),
    );

    const client = s3;
    const bucket = info.bucket;
    const put = async (key: string, file: string) => {
      await new Upload({
        client,
        params: { Bucket: bucket, Key: key, Body: createReadStream(file, { highWaterMark: 1 << 20 }) },
        partSize: 16 << 20,
        queueSize: 4,
      }).done();
    };
    const t1 = performance.now();
    await put(SRC.qcow2, input.qcow2);
    await put(SRC.raw, input.raw);
    await put(SRC.big, input.bigQcow2);
    await put(SRC.compressed, input.compressedQcow2);
    await put(SRC.zstd, input.zstdQcow2);
    input.log(`sources uploaded in ${((performance.now() - t1) / 1000).toFixed(1)} s`);

    const childEnv: Record<string, string> = {
      ...benchChildEnv(),
      ...hangarEnv(info, stack.signingKey),
      AWS_ACCESS_KEY_ID: info.accessKeyId,
      AWS_SECRET_ACCESS_KEY: info.secretAccessKey,
    };
    const nodeArgs = (process.env.BENCH_CHILD_NODE_ARGS ?? "").split(/\s+/).filter(Boolean);
    const minioPid = await readFile(join(home, "children.json"), "utf8")
      .then((t) => (JSON.parse(t) as { name: string; pid: number }[]).find((c) => c.name === "MinIO")?.pid)
      .catch(() => undefined);
    const runChild = async (args: string[]) => {
      const before = minioCpu(minioPid);
      const m = await runMeasured([...nodeArgs, input.child, ...args], childEnv);
      const after = minioCpu(minioPid);
      return before !== undefined && after !== undefined ? { ...m, minioCpuSeconds: after - before } : m;
    };

    /** A queued image created through the API, with `source` staged where its upload would land. */
    const stage = async (source: string, diskFormat: string): Promise<string> => {
      const res = await fetch(`${info.apiUrl}/v2/images`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-auth-token": info.tokens.admin },
        body: JSON.stringify({
          name: `bench-${diskFormat}`,
          disk_format: diskFormat,
          container_format: "bare",
        }),
      });
      if (res.status !== 201) throw new Error(`create image: ${res.status} ${await res.text()}`);
      const { id } = (await res.json()) as { id: string };
      await client.send(
        new CopyObjectCommand({ Bucket: bucket, Key: stagingKey(id), CopySource: `${bucket}/${source}` }),
      );
      return id;
    };
    const purge = (prefix: string) => purgeVersions(client, bucket, prefix);
    const importOnce = async (source: string, diskFormat: string, expectMd5?: string): Promise<Measured> => {
      const id = await stage(source, diskFormat);
      const m = await runChild(["import", stagingKey(id)]);
      if (expectMd5 !== undefined && m.report.checksum !== expectMd5)
        throw new Error(`imported ${source}: md5 ${m.report.checksum}, expected ${expectMd5}`);
      // A raw import keeps its data at the staging key; a converted one at images/<id>.
      await purge(imageKey(id));
      await purge(stagingPrefix(id));
      return m;
    };
    const copyOnce = async (mode: "copy" | "copy-writer"): Promise<Measured> => {
      const to = "bench/out/plain-copy";
      const m = await runChild([mode, SRC.raw, to]);
      await purge(to);
      return m;
    };

    // Warm-up (not recorded), and a check that the importer stores qemu-img's raw. The sources were
    // just written, so they are in the page cache already.
    const warm = await importOnce(SRC.qcow2, "qcow2", input.rawMd5);
    input.log(`warm-up import qcow2: ${warm.seconds.toFixed(2)} s, ${rssMiB(warm)}`);

    const copy: Measured[] = [];
    const copyWriter: Measured[] = [];
    const importQcow2: Measured[] = [];
    const importRaw: Measured[] = [];
    const steps: [string, () => Promise<void>][] = [
      ["plain copy", async () => void copy.push(await copyOnce("copy"))],
      ["copy through Hangar's writer", async () => void copyWriter.push(await copyOnce("copy-writer"))],
      ["import qcow2", async () => void importQcow2.push(await importOnce(SRC.qcow2, "qcow2", input.rawMd5))],
      ["import raw", async () => void importRaw.push(await importOnce(SRC.raw, "raw", input.rawMd5))],
    ];
    for (let i = 0; i < input.runs; i++) {
      // Rotate the order so no measure always follows the same neighbour.
      for (let j = 0; j < steps.length; j++) {
        const [name, step] = steps[(i + j) % steps.length] as [string, () => Promise<void>];
        await step();
        const series: Record<string, Measured[]> = {
          "plain copy": copy,
          "copy through Hangar's writer": copyWriter,
          "import qcow2": importQcow2,
          "import raw": importRaw,
        };
        const last = series[name]?.at(-1);
        input.log(`run ${i + 1}/${input.runs} ${name}: ${last?.seconds.toFixed(2)} s, ${rssMiB(last)}`);
      }
    }
    // What a pass-through cannot do without, each measured alone: md5 + sha512 of the bytes (the floor,
    // one thread), and reading them (the importer's socket GET, and MinIO serving it).
    const hashing = await runChild(["floor", input.raw]);
    const read = await runChild(["socket-get", SRC.raw]);
    const passThroughFloor = {
      hashCpuSeconds: hashing.report.opCpuSeconds ?? Number.NaN,
      readCpuSeconds: read.report.opCpuSeconds ?? Number.NaN,
      storageCpuSeconds: read.minioCpuSeconds ?? Number.NaN,
    };
    input.log(`pass-through's unavoidable work (CPU-s): ${JSON.stringify(passThroughFloor)}`);
    // BENCH_E2E_BIG=0 skips the 8 GiB-virtual import (8 GiB written) in spot checks.
    const importBig = process.env.BENCH_E2E_BIG === "0" ? undefined : await importOnce(SRC.big, "qcow2");
    if (importBig)
      input.log(`import 8 GiB-virtual qcow2: ${importBig.seconds.toFixed(2)} s, ${rssMiB(importBig)}`);
    const importCompressed = await importOnce(SRC.compressed, "qcow2", input.compressedMd5);
    input.log(
      `import zlib-compressed qcow2: ${importCompressed.seconds.toFixed(2)} s, ${rssMiB(importCompressed)}`,
    );
    const importZstd = await importOnce(SRC.zstd, "qcow2", input.zstdMd5);
    input.log(`import zstd-compressed qcow2: ${importZstd.seconds.toFixed(2)} s, ${rssMiB(importZstd)}`);
    return {
      copy,
      copyWriter,
      importQcow2,
      importRaw,
      importBig,
      importCompressed,
      importZstd,
      passThroughFloor,
      stackLog: stackLog.join("\n"),
    };
  } catch (err) {
    const tail = stackLog.slice(-30).join("\n");
    throw new Error(`end-to-end bench failed: ${err instanceof Error ? err.message : String(err)}\n${tail}`, {
      cause: err,
    });
  } finally {
    s3?.destroy();
    await stack?.stop();
    await rm(home, { recursive: true, force: true });
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

const rssMiB = (m: Measured | undefined) => {
  const p = m?.report.peak;
  const detail = p
    ? ` (main isolate peaks: heap ${p.heapUsedMiB.toFixed(0)}, array buffers ${p.arrayBuffersMiB.toFixed(0)} MiB)`
    : "";
  const cpu =
    m?.report.cpuSeconds !== undefined
      ? `, CPU ${m.report.cpuSeconds.toFixed(1)} s + MinIO ${m.minioCpuSeconds?.toFixed(1) ?? "?"} s`
      : "";
  return `${((m?.maxRssKiB ?? 0) / 1024).toFixed(0)} MiB${detail}${cpu}`;
};

/** CPU seconds (user + system) a process has used so far, from /proc; undefined where there is none. */
function minioCpu(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

/**
 * The environment of a measured child: this one's, without NODE_EXTRA_CA_CERTS. A machine that sets
 * it makes every Node process parse that whole CA bundle as it starts (65 ms here, against 40 ms for
 * the rest of Node's start-up); the children never open a TLS connection, and qemu-img pays nothing
 * of the kind.
 */
export function benchChildEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = { ...(process.env as Record<string, string>), ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

async function runMeasured(argv: string[], env: Record<string, string>): Promise<Measured> {
  const { report, processSeconds } = await runJsonChild<ChildReport>(
    process.execPath,
    argv,
    env,
    `import-child ${argv.slice(-3).join(" ")}`,
  );
  return { seconds: report.seconds, processSeconds, maxRssKiB: report.maxRssKiB, report };
}
