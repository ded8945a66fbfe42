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
 *                                       importer uses), still no conversion or hashing.
 *
 * Prints one JSON line on stdout: in-process seconds of the operation, peak RSS (KiB) of the process
 * (worker threads included) and what happened. Bundled by bench/run.ts, like convert-child.ts.
 */
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { createS3Client, createWriterClient } from "../functions/adapters/s3/object-store.ts";
import { writeObject } from "../functions/adapters/s3/part-writer.ts";
import { loadConfig } from "../functions/config.ts";
import type { Logger } from "../functions/core/ports.ts";
import { createInProcessHangar as createHangar } from "../infra/local/in-process.ts";

/** Parts in flight in S3ObjectStore.write (its default, not configurable through Config). */
const QUEUE_SIZE = 4;

// The importer's log lines go to stderr, so stdout carries only the report.
const log: Logger = {
  info: (message, fields) =>
    process.stderr.write(`${JSON.stringify({ level: "info", message, ...fields })}\n`),
  warn: (message, fields) =>
    process.stderr.write(`${JSON.stringify({ level: "warn", message, ...fields })}\n`),
  error: (message, fields) =>
    process.stderr.write(`${JSON.stringify({ level: "error", message, ...fields })}\n`),
};

const [mode, first, second] = process.argv.slice(2);

// Peaks of the main isolate's memory, sampled: where the RSS goes (worker threads' heaps are not in it).
const peak = { heapUsedMiB: 0, externalMiB: 0, arrayBuffersMiB: 0 };
const sampler = setInterval(() => {
  const m = process.memoryUsage();
  peak.heapUsedMiB = Math.max(peak.heapUsedMiB, m.heapUsed / 2 ** 20);
  peak.externalMiB = Math.max(peak.externalMiB, m.external / 2 ** 20);
  peak.arrayBuffersMiB = Math.max(peak.arrayBuffersMiB, m.arrayBuffers / 2 ** 20);
}, 50);
sampler.unref();
const config = loadConfig(process.env);

async function runImport(key: string): Promise<Record<string, unknown>> {
  const hangar = createHangar(config, { log });
  const envelope = {
    Records: [
      {
        eventName: "ObjectCreated:Put",
        // Keys arrive URL-encoded in S3 and MinIO notifications (`%2F` for `/`).
        s3: { bucket: { name: config.bucket }, object: { key: encodeURIComponent(key) } },
      },
    ],
  };
  const started = performance.now();
  const outcomes = await hangar.handleStorageEvent(envelope);
  const seconds = (performance.now() - started) / 1000;
  const outcome = outcomes[0];
  if (outcome?.outcome !== "active")
    throw new Error(`import did not end active: ${JSON.stringify(outcomes)}`);
  const image = outcome.image;
  return {
    seconds,
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

let report: Record<string, unknown>;
if (mode === "import" && first) report = await runImport(first);
else if (mode === "copy" && first && second) report = await runCopy(first, second, "lib-storage");
else if (mode === "copy-writer" && first && second) report = await runCopy(first, second, "writer");
else throw new Error("usage: import-child import <stagingKey> | copy|copy-writer <fromKey> <toKey>");

// CPU seconds of the whole process, worker threads included.
const cpu = process.cpuUsage();
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
process.stdout.write(
  `${JSON.stringify({ ...report, maxRssKiB: process.resourceUsage().maxRSS, cpuSeconds, peak })}\n`,
);
// Keep-alive sockets and the DynamoDB client would hold the event loop open for a while.
process.exit(0);
