/**
 * Child process of the end-to-end benchmark (bench/e2e.ts), so that its peak RSS is its own. Reads
 * Hangar's configuration from its environment (HANGAR_* and AWS_* variables, as a Lambda would) and:
 *
 *   import-child import <stagingKey>    the real importer: createHangar(loadConfig(env)).handleStorageEvent
 *                                       with an S3 `ObjectCreated:Put` envelope naming the staged object;
 *   import-child copy <fromKey> <toKey> the plain peer: one SDK streaming GET into a lib-storage multipart
 *                                       Upload, with the importer's writing client (unsigned payloads),
 *                                       part size and queue size, and no conversion or hashing;
 *   import-child copy-writer <from> <to> the same GET into Hangar's own multipart writer (the one the
 *                                       importer uses), still no conversion or hashing;
 *   import-child imports <key>...        the importer as a Lambda runs it: one instance, created once, imports
 *                                       each staged object in turn (first import after start vs the next);
 *   import-child get <key>               one SDK streaming GET, bytes discarded (the read's CPU alone);
 *   import-child socket-get <key>        the same GET as the importer reads it (object-reader.ts), chunks given back;
 *   import-child put <bytes> <key>       Hangar's writer storing <bytes> of in-memory data (the writes' CPU);
 *   import-child convert <qcow2 file>    the converter from the file loaded in memory first, output discarded
 *                                       (its CPU alone, no file reads; the second of two conversions);
 *   import-child floor <raw file>        md5 + sha512 of the file in this thread (the hashing floor).
 * The CPU modes (bench/cpu-floor.ts) report CPU seconds of the operation alone, all threads, and of the
 * main thread (from /proc/self/task).
 *
 * Prints one JSON line on stdout: in-process seconds of the operation, peak RSS (KiB) of the process
 * (worker threads included) and what happened. Bundled by bench/run.ts, like convert-child.ts.
 */
import { createHash, randomFillSync } from "node:crypto";
import { closeSync, openSync, readdirSync, readFileSync, readSync } from "node:fs";
import { GetObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { readObject } from "../functions/adapters/s3/object-reader.ts";
import { createS3Client, createWriterClient } from "../functions/adapters/s3/object-store.ts";
import { writeObject } from "../functions/adapters/s3/part-writer.ts";
import { loadConfig } from "../functions/config.ts";
import { convertToRaw } from "../functions/core/convert/index.ts";
import type { Logger } from "../functions/core/ports.ts";
import { createImporterFunction } from "../functions/roots/importer.ts";
import { createInProcessHangar as createHangar } from "../infra/local/in-process.ts";

/** Parts in flight in S3ObjectStore.write (its default, not configurable through Config). */
const QUEUE_SIZE = 4;

// The importer's log lines go to stderr, so stdout carries only the report; `t` is milliseconds since
// the process started (BENCH_CHILD_LOG keeps them).
const log: Logger = {
  info: (message, fields) =>
    process.stderr.write(
      `${JSON.stringify({ t: Math.round(performance.now()), level: "info", message, ...fields })}\n`,
    ),
  warn: (message, fields) =>
    process.stderr.write(`${JSON.stringify({ level: "warn", message, ...fields })}\n`),
  error: (message, fields) =>
    process.stderr.write(`${JSON.stringify({ level: "error", message, ...fields })}\n`),
};

const [mode, first, second] = process.argv.slice(2);

// Peaks of the main isolate's memory, sampled: where the RSS goes (worker threads' heaps are not in it).
const peak = { heapUsedMiB: 0, externalMiB: 0, arrayBuffersMiB: 0 };
// Not in the CPU modes: each sample costs CPU (measured: 0.2 s in an import's 10 s).
const sampled = ["import", "copy", "copy-writer"].includes(mode ?? "");
const sampler = setInterval(() => {
  if (!sampled) return;
  const m = process.memoryUsage();
  peak.heapUsedMiB = Math.max(peak.heapUsedMiB, m.heapUsed / 2 ** 20);
  peak.externalMiB = Math.max(peak.externalMiB, m.external / 2 ** 20);
  peak.arrayBuffersMiB = Math.max(peak.arrayBuffersMiB, m.arrayBuffers / 2 ** 20);
}, 50);
sampler.unref();
const config = loadConfig(process.env);

async function runImport(key: string): Promise<Record<string, unknown>> {
  const hangar = createHangar(config, { log });
  const started = performance.now();
  const report = await importWith(hangar, key);
  return { ...report, seconds: (performance.now() - started) / 1000 };
}

/** One import of the staged object `key`, from its S3 notification; it must end active. */
async function importWith(
  hangar: { handleStorageEvent: ReturnType<typeof createHangar>["handleStorageEvent"] },
  key: string,
): Promise<Record<string, unknown>> {
  const envelope = {
    Records: [
      {
        eventName: "ObjectCreated:Put",
        // Keys arrive URL-encoded in S3 and MinIO notifications (`%2F` for `/`).
        s3: { bucket: { name: config.bucket }, object: { key: encodeURIComponent(key) } },
      },
    ],
  };
  const outcomes = await hangar.handleStorageEvent(envelope);
  const outcome = outcomes[0];
  if (outcome?.outcome !== "active")
    throw new Error(`import did not end active: ${JSON.stringify(outcomes)}`);
  const image = outcome.image;
  return {
    size: image.size,
    checksum: image.checksum,
    osHashValue: image.os_hash_value,
    converted: image.converted,
    diskFormat: image.disk_format,
  };
}

async function runCopy(
  from: string,
  to: string,
  through: "lib-storage" | "writer",
): Promise<Record<string, unknown>> {
  const reader = createS3Client(config.region, config.s3Endpoint);
  // The importer's writing client: part bodies sent as UNSIGNED-PAYLOAD, as the importer sends them.
  const writer = createWriterClient(config.region, config.s3Endpoint);
  const started = performance.now();
  const got = await reader.send(new GetObjectCommand({ Bucket: config.bucket, Key: from }));
  if (!got.Body) throw new Error(`no body for ${from}`);
  const body = got.Body as AsyncIterable<Uint8Array>;
  if (through === "writer") {
    await writeObject(body, {
      client: writer,
      bucket: config.bucket,
      key: to,
      partSize: config.partSize,
      queueSize: QUEUE_SIZE,
      contentType: "application/octet-stream",
    });
  } else {
    await new Upload({
      client: writer,
      params: { Bucket: config.bucket, Key: to, Body: got.Body, ContentType: "application/octet-stream" },
      partSize: config.partSize,
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false,
    }).done();
  }
  const seconds = (performance.now() - started) / 1000;
  reader.destroy();
  writer.destroy();
  return { seconds, size: got.ContentLength };
}

/** CPU seconds so far: the whole process (every thread) and its main thread alone. */
function cpuNow(): { all: number; main: number } {
  const u = process.cpuUsage();
  let main = Number.NaN;
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    main = (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {}
  return { all: (u.user + u.system) / 1e6, main };
}

/**
 * CPU seconds so far of each thread alive, by thread id, with the thread's name (`comm`: the main
 * thread is `node`, V8's helpers `V8 DefaultWorke`, libuv's pool `libuv-worker`, worker threads
 * `WorkerThread` or their own name).
 */
function threadCpu(): Map<string, { name: string; seconds: number; system: number }> {
  const out = new Map<string, { name: string; seconds: number; system: number }>();
  let tids: string[] = [];
  try {
    tids = readdirSync("/proc/self/task");
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(tid, {
        name,
        seconds: (Number(fields[11]) + Number(fields[12])) / 100,
        system: Number(fields[12]) / 100,
      });
    } catch {}
  }
  return out;
}

/**
 * CPU seconds each thread used between two `threadCpu` readings: the main thread (and its part in the
 * kernel), then the four busiest
 * others by CPU (Node names every thread `node`, so they are told apart by what they use: the hashing
 * threads are the busiest), the rest summed. Threads that ended in between are lost (the importer's
 * hashing threads are kept between imports).
 */
function threadDelta(
  before: Map<string, { name: string; seconds: number; system: number }>,
  after: Map<string, { name: string; seconds: number; system: number }>,
): Record<string, number> {
  const round = (x: number) => Number(x.toFixed(3));
  const others: number[] = [];
  let main = 0;
  let mainSystem = 0;
  for (const [tid, t] of after) {
    const d = t.seconds - (before.get(tid)?.seconds ?? 0);
    if (tid === String(process.pid)) {
      main = d;
      mainSystem = t.system - (before.get(tid)?.system ?? 0);
    } else others.push(d);
  }
  others.sort((x, y) => y - x);
  // The main thread's time in the kernel (system calls: sockets, files) apart.
  const out: Record<string, number> = { main: round(main), mainSystem: round(mainSystem) };
  others.slice(0, 4).forEach((d, i) => {
    out[`thread${i + 1}`] = round(d);
  });
  out.rest = round(others.slice(4).reduce((t, d) => t + d, 0));
  return out;
}

/** Runs `work`, giving its wall seconds and CPU seconds (all threads, main thread, each kind of thread). */
async function measured<T>(work: () => Promise<T>) {
  const before = cpuNow();
  const threadsBefore = threadCpu();
  const faultsBefore = process.resourceUsage().minorPageFault;
  const started = performance.now();
  const result = await work();
  const after = cpuNow();
  return {
    result,
    /** Pages touched for the first time (fresh memory), every thread. */
    minorFaults: process.resourceUsage().minorPageFault - faultsBefore,
    seconds: (performance.now() - started) / 1000,
    cpuSeconds: after.all - before.all,
    mainCpuSeconds: after.main - before.main,
    threads: threadDelta(threadsBefore, threadCpu()),
  };
}

/**
 * Imports each key in turn with the importer function alone (its composition root, as its Lambda
 * bundle has it: no API in the process), created once, as one Lambda instance would.
 */
async function runImports(keys: string[]): Promise<Record<string, unknown>> {
  const atStart = cpuNow();
  const importer = createImporterFunction(config, { log, metrics: { add() {} } });
  const hangar = { handleStorageEvent: importer.handle };
  const imports = [];
  for (const key of keys) {
    const m = await measured(() => importWith(hangar, key));
    imports.push({
      ...m.result,
      seconds: m.seconds,
      cpuSeconds: m.cpuSeconds,
      mainCpuSeconds: m.mainCpuSeconds,
      threads: m.threads,
      minorFaults: m.minorFaults,
    });
  }
  return { seconds: imports.reduce((t, i) => t + i.seconds, 0), startCpuSeconds: atStart.all, imports };
}

/** One SDK streaming GET of `key`, its bytes counted and dropped. */
async function runGet(key: string): Promise<Record<string, unknown>> {
  return measuredGet(async (reader) => {
    const got = await reader.send(new GetObjectCommand({ Bucket: config.bucket, Key: key }));
    let bytes = 0;
    for await (const chunk of got.Body as AsyncIterable<Uint8Array>) bytes += chunk.byteLength;
    return bytes;
  });
}

/** One GET of `key` over the importer's own socket (object-reader.ts), each chunk counted and given back. */
async function runSocketGet(key: string): Promise<Record<string, unknown>> {
  return measuredGet(async (reader) => {
    const read = readObject(reader, { Bucket: config.bucket, Key: key });
    let bytes = 0;
    for await (const chunk of read) {
      bytes += chunk.byteLength;
      read.release(chunk);
    }
    return bytes;
  });
}

/** Time and CPU of `get` (bytes read) with a client of its own. */
async function measuredGet(get: (reader: S3Client) => Promise<number>): Promise<Record<string, unknown>> {
  const reader = createS3Client(config.region, config.s3Endpoint);
  const m = await measured(() => get(reader));
  reader.destroy();
  return {
    seconds: m.seconds,
    bytes: m.result,
    opCpuSeconds: m.cpuSeconds,
    opMainCpuSeconds: m.mainCpuSeconds,
    threads: m.threads,
  };
}

/** Hangar's writer storing `size` bytes of random data (4 MiB views of one 64 MiB buffer) under `key`. */
async function runPut(size: number, key: string): Promise<Record<string, unknown>> {
  const writer = createWriterClient(config.region, config.s3Endpoint);
  const data = randomFillSync(Buffer.allocUnsafe(64 << 20));
  async function* body() {
    for (let at = 0; at < size; at += 4 << 20) {
      const off = at % data.length;
      yield data.subarray(off, off + Math.min(4 << 20, size - at));
    }
  }
  const m = await measured(() =>
    writeObject(body(), {
      client: writer,
      bucket: config.bucket,
      key,
      partSize: config.partSize,
      queueSize: QUEUE_SIZE,
      contentType: "application/octet-stream",
    }),
  );
  writer.destroy();
  return {
    seconds: m.seconds,
    bytes: m.result.size,
    opCpuSeconds: m.cpuSeconds,
    opMainCpuSeconds: m.mainCpuSeconds,
    threads: m.threads,
  };
}

/**
 * The converter with the importer's options, its output dropped, reading the qcow2 from memory: its own
 * CPU, with the copy of every window it reads but no file reads. Measured on the second of two
 * conversions, as the importer's later imports are: the first touches the loaded file's pages and the
 * conversion's buffers for the first time, and compiles the converter.
 */
async function runConvert(file: string): Promise<Record<string, unknown>> {
  const image = readFileSync(file);
  const size = image.byteLength;
  const range = {
    size,
    async read(offset: number, length: number, _signal?: AbortSignal, into?: Uint8Array) {
      if (offset + length > size) throw new Error("short read");
      const buf = into ?? Buffer.allocUnsafe(length);
      buf.set(image.subarray(offset, offset + length));
      return buf;
    },
  };
  const convert = async () => {
    let bytes = 0;
    for await (const chunk of convertToRaw(
      "qcow2",
      { range },
      { windowSize: 4 << 20, readAhead: 2, recycle: true },
    ))
      bytes += chunk.byteLength;
    return bytes;
  };
  await convert();
  const m = await measured(convert);
  return {
    seconds: m.seconds,
    bytes: m.result,
    opCpuSeconds: m.cpuSeconds,
    opMainCpuSeconds: m.mainCpuSeconds,
    threads: m.threads,
  };
}

/** md5 + sha512 of a file in this thread; only the hashing is counted (reads are synchronous, between). */
async function runFloor(file: string): Promise<Record<string, unknown>> {
  const fd = openSync(file, "r");
  const buf = Buffer.allocUnsafe(16 << 20);
  const md5 = createHash("md5");
  const sha512 = createHash("sha512");
  let hashing = { md5: 0, sha512: 0 };
  let bytes = 0;
  for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) {
    const chunk = buf.subarray(0, n);
    const t0 = cpuNow().all;
    md5.update(chunk);
    const t1 = cpuNow().all;
    sha512.update(chunk);
    hashing = { md5: hashing.md5 + t1 - t0, sha512: hashing.sha512 + cpuNow().all - t1 };
    bytes += n;
  }
  closeSync(fd);
  return {
    seconds: 0,
    bytes,
    md5: md5.digest("hex"),
    opCpuSeconds: hashing.md5 + hashing.sha512,
    md5CpuSeconds: hashing.md5,
    sha512CpuSeconds: hashing.sha512,
  };
}

let report: Record<string, unknown>;
const rest = process.argv.slice(3);
if (mode === "import" && first) report = await runImport(first);
else if (mode === "copy" && first && second) report = await runCopy(first, second, "lib-storage");
else if (mode === "copy-writer" && first && second) report = await runCopy(first, second, "writer");
else if (mode === "imports" && rest.length > 0) report = await runImports(rest);
else if (mode === "get" && first) report = await runGet(first);
else if (mode === "socket-get" && first) report = await runSocketGet(first);
else if (mode === "put" && first && second) report = await runPut(Number(first), second);
else if (mode === "convert" && first) report = await runConvert(first);
else if (mode === "floor" && first) report = await runFloor(first);
else
  throw new Error(
    "usage: import-child import <stagingKey> | copy|copy-writer <fromKey> <toKey> | imports <key>... | " +
      "get|socket-get <key> | put <bytes> <key> | convert <qcow2> | floor <raw>",
  );

// CPU seconds of the whole process, worker threads included.
const cpu = process.cpuUsage();
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
process.stdout.write(
  `${JSON.stringify({ ...report, maxRssKiB: process.resourceUsage().maxRSS, cpuSeconds, peak })}\n`,
);
// Keep-alive sockets and the DynamoDB client would hold the event loop open for a while.
process.exit(0);
