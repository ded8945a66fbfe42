import { execFile } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { ClientRequest } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import {
  CreateBucketCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SLAB_BYTES } from "../../functions/adapters/s3/object-reader.ts";
import { contentMd5ForDeletes, S3ObjectStore } from "../../functions/adapters/s3/object-store.ts";
import { sharedBuffers } from "../../functions/core/buffers.ts";
import { stagingKey } from "../../functions/core/image/image.ts";
import {
  type Logger,
  ObjectChangedError,
  type ObjectRead,
  type ReadOptions,
} from "../../functions/core/ports.ts";
import { MIB } from "../../functions/core/uploads/plan.ts";
import { useAwsKeys } from "../aws-keys.ts";
import { directImport } from "./setup/direct-import.ts";
import { qcow2Of } from "./setup/disk.ts";
import { getStack, s3Client } from "./setup/stack.ts";
import { startTlsProxy } from "./setup/tls-proxy.ts";

// Whole-object reads over a socket of their own (object-reader.ts) against the stack's MinIO, beside the
// same reads through the SDK's own HTTP handler (`sdkReads`).

const s3 = s3Client();
const bucket = `hangar-reader-${randomUUID().slice(0, 8)}`;

/** The store as Hangar builds it: its client asks for no response checksums (createS3Client). */
function store(o: { sdkReads?: boolean } = {}) {
  return new WatchedStore(...storeArgs(o));
}

function storeArgs(o: { sdkReads?: boolean }): ConstructorParameters<typeof S3ObjectStore> {
  const info = getStack();
  const client = new S3Client({
    endpoint: info.s3Endpoint,
    region: info.region,
    forcePathStyle: true,
    credentials: { accessKeyId: info.accessKeyId, secretAccessKey: info.secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  return [
    { bucket, region: info.region, endpoint: info.s3Endpoint, partSize: 8 * MIB, ...o },
    contentMd5ForDeletes(client),
  ];
}

/** The real store, noting each whole read: its chunks and the buffers they came in. */
class WatchedStore extends S3ObjectStore {
  readonly reads: { key: string; chunks: number; buffers: Set<ArrayBufferLike> }[] = [];
  override read(key: string, signal?: AbortSignal, options?: ReadOptions): ObjectRead {
    const inner = super.read(key, signal, options);
    const seen = { key, chunks: 0, buffers: new Set<ArrayBufferLike>() };
    this.reads.push(seen);
    return {
      async *[Symbol.asyncIterator]() {
        for await (const chunk of inner) {
          seen.chunks++;
          seen.buffers.add(chunk.buffer);
          yield chunk;
        }
      },
      ...(inner.release ? { release: (chunk: Uint8Array) => inner.release?.(chunk) } : {}),
    };
  }
}

async function put(key: string, body: Uint8Array): Promise<{ etag?: string; versionId?: string }> {
  const out = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
  return { ...(out.ETag ? { etag: out.ETag } : {}), ...(out.VersionId ? { versionId: out.VersionId } : {}) };
}

/** Reads `read` to its end, copying each chunk and giving it back (or keeping it, with `keep`). */
async function consume(read: ObjectRead, keep = false) {
  const chunks: Uint8Array[] = [];
  const buffers = new Set<ArrayBufferLike>();
  let shared = true;
  let largest = 0;
  for await (const chunk of read) {
    buffers.add(chunk.buffer);
    shared &&= chunk.buffer instanceof SharedArrayBuffer;
    largest = Math.max(largest, chunk.byteLength);
    if (keep) {
      chunks.push(chunk);
    } else {
      chunks.push(Buffer.from(chunk));
      read.release?.(chunk);
    }
  }
  return { bytes: Buffer.concat(chunks), count: chunks.length, buffers: buffers.size, shared, largest };
}

/** Runs `body` with every TCP connection the process opens meanwhile noted. */
async function sockets<T>(body: (opened: Socket[]) => Promise<T>): Promise<T> {
  const opened: Socket[] = [];
  const note = (message: unknown) => opened.push((message as { socket: Socket }).socket);
  subscribe("net.client.socket", note);
  try {
    return await body(opened);
  } finally {
    unsubscribe("net.client.socket", note);
  }
}

const closed = (socket: Socket) =>
  socket.destroyed
    ? Promise.resolve()
    : new Promise<void>((resolve) => socket.once("close", () => resolve()));

/** The error `promise` fails with. */
async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (err: unknown) => err,
  );
}

beforeAll(async () => {
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  await s3.send(
    new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: "Enabled" } }),
  );
});

describe("S3ObjectStore.read over a socket of its own (MinIO)", () => {
  it("reads objects of every size byte for byte, in shared buffers used again once given back", async () => {
    const objects = store();
    const sizes = [0, 1, 65_537, SLAB_BYTES - 1, SLAB_BYTES, SLAB_BYTES + 1, 10 * SLAB_BYTES + 12_345];
    for (const size of sizes) {
      const key = `staging/${randomUUID()}/upload`;
      const data = randomBytes(size);
      await put(key, data);
      const got = await consume(objects.read(key));
      expect(Buffer.compare(got.bytes, data), `size ${size}`).toBe(0);
      expect(got.count, `size ${size}`).toBe(Math.ceil(size / SLAB_BYTES));
      expect(got.largest).toBeLessThanOrEqual(SLAB_BYTES);
      expect(got.shared, `size ${size}`).toBe(true);
      // Eleven chunks from at most four buffers: two read ahead, one filling, one lent.
      if (size > 4 * SLAB_BYTES) expect(got.buffers).toBeLessThanOrEqual(4);
    }
  });

  it("keeps its buffers for the next read: a second read makes none, and reads side by side get their own bytes", async () => {
    const keys = [`staging/${randomUUID()}/upload`, `staging/${randomUUID()}/upload`];
    const data = [randomBytes(6 * SLAB_BYTES + 7), randomBytes(5 * SLAB_BYTES + 3)];
    for (const [i, key] of keys.entries()) await put(key, data[i] as Buffer);
    const first = await consume(store().read(keys[0] as string));
    expect(Buffer.compare(first.bytes, data[0] as Buffer)).toBe(0);
    const made = sharedBuffers.made;
    const second = await consume(store().read(keys[0] as string));
    expect(Buffer.compare(second.bytes, data[0] as Buffer)).toBe(0);
    expect(sharedBuffers.made).toBe(made);
    const both = await Promise.all(keys.map((key) => consume(store().read(key))));
    for (const [i, got] of both.entries()) expect(Buffer.compare(got.bytes, data[i] as Buffer)).toBe(0);
  });

  it("a consumer that never gives chunks back keeps every one of them unchanged", async () => {
    const key = `staging/${randomUUID()}/upload`;
    const data = randomBytes(10 * SLAB_BYTES + 5);
    await put(key, data);
    const got = await consume(store().read(key), true);
    expect(Buffer.compare(got.bytes, data)).toBe(0);
    expect(got.buffers).toBe(11);
  });

  it("reads the version asked for, and an ETag that still matches, whatever came after", async () => {
    const objects = store();
    const key = `staging/${randomUUID()}/upload`;
    const first = randomBytes(3 * MIB + 3);
    const { versionId, etag } = await put(key, first);
    await put(key, randomBytes(MIB));
    expect(versionId).toMatch(/.+/);
    const got = await consume(objects.read(key, undefined, { versionId: versionId as string }));
    expect(Buffer.compare(got.bytes, first)).toBe(0);
    const latest = await objects.head(key);
    const again = await consume(objects.read(key, undefined, { ifMatch: latest?.etag as string }));
    expect(again.bytes.length).toBe(MIB);
    expect(etag).not.toBe(latest?.etag);
  });

  it("a missing object and a replaced one fail as the SDK's own read does", async () => {
    const key = `staging/${randomUUID()}/upload`;
    const { etag } = await put(key, randomBytes(1000));
    await put(key, randomBytes(1000));
    const seen: unknown[] = [];
    for (const objects of [store(), store({ sdkReads: true })]) {
      const missing = await failure(consume(objects.read(`staging/${randomUUID()}/none`)));
      expect(missing).toBeInstanceOf(S3ServiceException);
      expect(missing).toMatchObject({ name: "NoSuchKey", $metadata: { httpStatusCode: 404 } });
      const changed = await failure(consume(objects.read(key, undefined, { ifMatch: etag as string })));
      expect(changed).toBeInstanceOf(ObjectChangedError);
      expect((changed as Error).cause).toMatchObject({
        name: "PreconditionFailed",
        $metadata: { httpStatusCode: 412 },
      });
      const version = await failure(consume(objects.read(key, undefined, { versionId: randomUUID() })));
      expect(version).toBeInstanceOf(S3ServiceException);
      seen.push(
        [missing, changed, version].map((e) => {
          const { name, message, $fault, $metadata } = e as S3ServiceException;
          return { name, message, $fault, status: $metadata?.httpStatusCode };
        }),
      );
    }
    expect(seen[0]).toEqual(seen[1]);
  });

  it("an abort mid-read fails the read and closes its connection; so does a consumer stopping early", async () => {
    const key = `staging/${randomUUID()}/upload`;
    await put(key, randomBytes(24 * MIB));
    await sockets(async (opened) => {
      const controller = new AbortController();
      const it = store().read(key, controller.signal)[Symbol.asyncIterator]();
      expect((await it.next()).done).toBe(false);
      expect(opened).toHaveLength(1);
      controller.abort(new Error("the import stopped"));
      const err = await failure(it.next());
      expect(err).toMatchObject({ name: "AbortError", cause: { message: "the import stopped" } });
      await closed(opened[0] as Socket);
      expect(opened[0]?.bytesRead).toBeLessThan(24 * MIB);
    });
    await sockets(async (opened) => {
      for await (const _ of store().read(key)) break;
      expect(opened).toHaveLength(1);
      await closed(opened[0] as Socket);
      expect(opened[0]?.bytesRead).toBeLessThan(24 * MIB);
    });
  });

  it("sends no whole-object GET through node:http; the SDK's read does (the comparison this test rests on)", async () => {
    const key = `staging/${randomUUID()}/upload`;
    await put(key, randomBytes(MIB));
    const gets: string[] = [];
    const note = (message: unknown) => {
      const request = (message as { request: ClientRequest }).request;
      if (request.method === "GET" && request.path.includes(key)) gets.push(request.path);
    };
    subscribe("http.client.request.start", note);
    try {
      await consume(store().read(key));
      expect(gets).toEqual([]);
      await consume(store({ sdkReads: true }).read(key));
      expect(gets).toHaveLength(1);
    } finally {
      unsubscribe("http.client.request.start", note);
    }
  });
});

describe("imports read over the socket (MinIO, DynamoDB Local)", () => {
  const quiet: Logger = { info: () => {}, warn: () => {}, error: () => {} };
  const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");
  let dir: string;
  let disk: Buffer;
  let qcow2: Buffer;

  // The store writes converted images with a client of its own, which takes its credentials from here.
  let restoreKeys: () => void;

  beforeAll(() => {
    restoreKeys = useAwsKeys(getStack().accessKeyId, getStack().secretAccessKey);
    dir = mkdtempSync(join(tmpdir(), "hangar-reader-"));
    // 64 MiB with 32 MiB of data in stretches: a qcow2 of many of the reader's buffers.
    disk = Buffer.alloc(64 * MIB);
    for (let at = MIB / 2; at < disk.length; at += 2 * MIB) randomBytes(MIB).copy(disk, at);
    qcow2 = qcow2Of(disk, dir);
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
    restoreKeys();
  });

  /** Imports `bytes` as `format` with reads through the socket or the SDK; the record and the store. */
  async function imported(format: "raw" | "qcow2", bytes: Buffer, sdkReads: boolean) {
    const objects = store({ sdkReads });
    // qcow2 is not accepted: it is converted to raw, its upload read by the converter beside the digests.
    const { images, service, importer } = directImport(objects, {
      log: quiet,
      acceptedFormats: ["raw"],
      uploadUrlTtlSeconds: 600,
    });
    const owner = { userId: "alice", projectId: "p-reader", roles: ["member"] };
    const { image, upload } = await service.create({ name: format, disk_format: format }, owner);
    const link = upload as { url: string; headers: Record<string, string> };
    const res = await fetch(link.url, { method: "PUT", headers: link.headers, body: bytes });
    expect(res.status).toBe(200);
    const version = res.headers.get("x-amz-version-id") ?? undefined;
    const gets: string[] = [];
    const note = (message: unknown) => {
      const request = (message as { request: ClientRequest }).request;
      const path = new URL(request.path, "http://storage").pathname;
      if (
        request.method === "GET" &&
        path.endsWith(`/${stagingKey(image.id)}`) &&
        !request.getHeader("range")
      ) {
        gets.push(request.path);
      }
    };
    subscribe("http.client.request.start", note);
    try {
      expect((await importer.importStagedObject(stagingKey(image.id), version)).outcome).toBe("active");
    } finally {
      unsubscribe("http.client.request.start", note);
    }
    return { record: await images.get(image.id), objects, gets };
  }

  for (const format of ["raw", "qcow2"] as const) {
    it(`a ${format} upload ends active with the same checksums as when read through the SDK`, async () => {
      const bytes = format === "raw" ? randomBytes(24 * MIB + 5) : qcow2;
      const stored = format === "raw" ? bytes : disk;
      const socket = await imported(format, bytes, false);
      const sdk = await imported(format, bytes, true);
      for (const { record } of [socket, sdk]) {
        expect(record).toMatchObject({
          status: "active",
          disk_format: "raw",
          size: stored.length,
          checksum: hex("md5", stored),
          os_hash_value: hex("sha512", stored),
          converted: format !== "raw",
        });
      }
      // The SDK's read goes through node:http; the socket's does not.
      expect(sdk.gets.length).toBeGreaterThan(0);
      expect(socket.gets).toEqual([]);
      const [read] = socket.objects.reads;
      expect(read?.key).toBe(stagingKey(socket.record?.id ?? ""));
      expect(read?.chunks).toBe(Math.ceil(bytes.length / SLAB_BYTES));
      // The digests, the inspector and the converter give every chunk back: few buffers for many chunks.
      expect(read?.buffers.size).toBeLessThanOrEqual(6);
    });
  }
});

describe("over TLS", () => {
  // MinIO speaks plain HTTP here: a TLS proxy on loopback, with a certificate made for the test, stands
  // in front of it. The reads run in a child process that trusts that certificate the way Node trusts
  // any (NODE_EXTRA_CA_CERTS), with the store's client configured as in AWS (an https endpoint).
  it("reads byte for byte over an https endpoint, through the socket's TLS, as the SDK's read does", async () => {
    const info = getStack();
    const proxy = await startTlsProxy(new URL(info.s3Endpoint));
    const dir = proxy.dir;
    try {
      const key = `staging/${randomUUID()}/upload`;
      const data = randomBytes(5 * SLAB_BYTES + 77);
      await put(key, data);
      const root = resolve(import.meta.dirname, "../..");
      const child = join(dir, "read.mts");
      writeFileSync(
        child,
        `import { createHash } from "node:crypto";
import { subscribe } from "node:diagnostics_channel";
import { S3ObjectStore } from ${JSON.stringify(join(root, "functions/adapters/s3/object-store.ts"))};
const out = [];
let gets = 0;
subscribe("http.client.request.start", ({ request }) => { if (request.method === "GET") gets++; });
for (const sdkReads of [false, true]) {
  const store = new S3ObjectStore({ bucket: process.env.BUCKET, region: process.env.REGION, endpoint: process.env.ENDPOINT, partSize: 8 << 20, sdkReads });
  const read = store.read(process.env.KEY);
  const hash = createHash("sha256");
  let shared = true;
  gets = 0;
  for await (const chunk of read) {
    hash.update(chunk);
    shared &&= chunk.buffer instanceof SharedArrayBuffer;
    read.release?.(chunk);
  }
  out.push({ sdkReads, sha256: hash.digest("hex"), shared, gets });
}
console.log(JSON.stringify(out));
`,
      );
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [join(root, "node_modules", "tsx", "dist", "cli.mjs"), child],
        {
          cwd: root,
          timeout: 60_000,
          env: {
            PATH: process.env.PATH ?? "",
            AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
            NODE_EXTRA_CA_CERTS: proxy.certFile,
            AWS_ACCESS_KEY_ID: info.accessKeyId,
            AWS_SECRET_ACCESS_KEY: info.secretAccessKey,
            ENDPOINT: proxy.endpoint,
            REGION: info.region,
            BUCKET: bucket,
            KEY: key,
          },
        },
      );
      const sha256 = createHash("sha256").update(data).digest("hex");
      expect(JSON.parse(stdout.trim().split("\n").at(-1) ?? "")).toEqual([
        { sdkReads: false, sha256, shared: true, gets: 0 },
        { sdkReads: true, sha256, shared: false, gets: 1 },
      ]);
    } finally {
      proxy.close();
    }
  });
});
