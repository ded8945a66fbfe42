import { randomBytes, randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import {
  CreateBucketCommand,
  HeadObjectCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import type { APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { DynamoImageRepository } from "../../functions/adapters/dynamodb/image-repository.ts";
import { DynamoQuotaStore } from "../../functions/adapters/dynamodb/quota-store.ts";
import { HANDED_OVER } from "../../functions/core/image/transitions.ts";
import { UNLIMITED } from "../../functions/core/quota.ts";
import { FUNCTIONS, type FunctionKey } from "../../infra/local/lambda/functions.ts";
import { type InvocationError, LocalFunction } from "../../infra/local/lambda/runtime.ts";
import { hangarEnv } from "../../infra/local/stack.ts";
import { getStack, itemClient, s3Client, signingKey } from "./setup/stack.ts";

// Each function's BUILT bundle (the one `npm run build` makes, as the stack runs it) gets the sample
// events of test/fixtures/events/ against the run's MinIO and DynamoDB Local. A bucket of its own, with
// no bucket notifications, keeps the stack's importer out of the way.
const fixtures = join(import.meta.dirname, "..", "fixtures", "events");
const bucket = `hangar-handlers-${randomUUID().slice(0, 8)}`;
const s3 = s3Client();
const started: LocalFunction[] = [];

function start(key: FunctionKey, extra: Record<string, string> = {}): LocalFunction {
  const info = getStack();
  const spec = FUNCTIONS[key];
  const fn = new LocalFunction({
    spec,
    name: `hangar-handlers-${key}`,
    bundle: join(inject("hangarStack").bundlesDir, spec.handler, "index.mjs"),
    env: {
      ...hangarEnv({ ...info, bucket }, signingKey()),
      AWS_ACCESS_KEY_ID: info.accessKeyId,
      AWS_SECRET_ACCESS_KEY: info.secretAccessKey,
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      ...extra,
    },
    log: () => {},
  });
  started.push(fn);
  return fn;
}

async function event(name: string, vars: Record<string, string>): Promise<unknown> {
  let text = await readFile(join(fixtures, `${name}.json`), "utf8");
  for (const [k, v] of Object.entries(vars)) text = text.replaceAll(`{{${k}}}`, v);
  expect(text).not.toMatch(/\{\{\w+\}\}/);
  return JSON.parse(text);
}

function body(result: unknown): string {
  const r = result as APIGatewayProxyStructuredResultV2;
  return r.isBase64Encoded ? Buffer.from(r.body ?? "", "base64").toString("utf8") : (r.body ?? "");
}

const host = "hangar.example.test";
let api: LocalFunction;
let importer: LocalFunction;

beforeAll(async () => {
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  // Versions kept, as in the deployed bucket (infra/cloudformation/storage.yml).
  await s3.send(
    new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: "Enabled" } }),
  );
  api = start("api");
  importer = start("importer");
});

afterAll(async () => {
  await Promise.all(started.map((f) => f.stop()));
  s3.destroy();
});

async function createImage(): Promise<string> {
  const token = getStack().tokens.alice;
  const created = (await api.invoke(
    await event("api-create", { host, token }),
  )) as APIGatewayProxyStructuredResultV2;
  expect(created.statusCode, body(created)).toBe(201);
  const image = JSON.parse(body(created)) as { id: string; name: string; status: string };
  expect(image).toMatchObject({ name: "handler-fixture", status: "queued" });
  return image.id;
}

async function show(id: string): Promise<Record<string, unknown>> {
  const token = getStack().tokens.alice;
  const file = (await api.invoke(
    await event("api-file", { host, token, imageId: id }),
  )) as APIGatewayProxyStructuredResultV2;
  // Only the status matters here; /file answers 302 once active.
  return { statusCode: file.statusCode, location: file.headers?.location };
}

describe("built handler bundles with AWS's event shapes", () => {
  it("api: create (base64 body), JSON-patch, list with repeated tag=, and /file → 302 with Location", async () => {
    const token = getStack().tokens.alice;
    const id = await createImage();

    const patched = (await api.invoke(
      await event("api-patch", { host, token, imageId: id }),
    )) as APIGatewayProxyStructuredResultV2;
    expect(patched.statusCode, body(patched)).toBe(200);
    expect(JSON.parse(body(patched))).toMatchObject({
      name: "handler-fixture-patched",
      tags: ["handler-fixture", "bundle"],
    });

    const listed = (await api.invoke(
      await event("api-list-tags", { host, token }),
    )) as APIGatewayProxyStructuredResultV2;
    expect(listed.statusCode, body(listed)).toBe(200);
    const images = (JSON.parse(body(listed)) as { images: { id: string; tags: string[] }[] }).images;
    expect(images.map((i) => i.id)).toContain(id);
    for (const image of images)
      expect(image.tags).toEqual(expect.arrayContaining(["handler-fixture", "bundle"]));

    // Not active yet: Glance's 204 for an image with no data.
    expect((await show(id)).statusCode).not.toBe(302);
    await s3.send(
      new PutObjectCommand({ Bucket: bucket, Key: `staging/${id}/upload`, Body: randomBytes(4096) }),
    );
    expect(await importer.invoke(await event("s3-put", { bucket, imageId: id, etag: "fixture" }))).toBeNull();
    const file = await show(id);
    expect(file.statusCode).toBe(302);
    // Kept where it was uploaded: the link names the staged object and the version the import verified.
    expect(String(file.location)).toContain(`/${bucket}/staging/${id}/upload?`);
    expect(String(file.location)).toContain("versionId=");
  });

  it("importer: ObjectCreated:Put (S3's key) and CompleteMultipartUpload (MinIO's %2F key) both import", async () => {
    for (const fixture of ["s3-put", "s3-complete-multipart"]) {
      const id = await createImage();
      const data = randomBytes(64 * 1024);
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `staging/${id}/upload`, Body: data }));
      expect(
        await importer.invoke(await event(fixture, { bucket, imageId: id, etag: "fixture" })),
        fixture,
      ).toBeNull();
      const stored = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: `staging/${id}/upload` }));
      expect(stored.ContentLength, fixture).toBe(data.length);
      // A repeated event changes nothing: the image is no longer waiting for an upload.
      expect(
        await importer.invoke(await event(fixture, { bucket, imageId: id, etag: "fixture" })),
      ).toBeNull();
    }
  });

  it("importer: an event it cannot read fails the invocation, so Lambda retries it", async () => {
    await expect(importer.invoke({ Records: "not a list" })).rejects.toThrow(/InvalidStorageEventError/);
  });

  it("a failed invocation's stack trace points at the TypeScript sources, not the minified bundle", async () => {
    const failed = await importer.invoke({ Records: "not a list" }).then(
      () => undefined,
      (err: unknown) => err as InvocationError,
    );
    const trace = failed?.payload.trace ?? [];
    // Mapped lazily from the maps beside index.mjs and its chunks, without NODE_OPTIONS=--enable-source-maps.
    expect(trace.join("\n")).toMatch(/functions\/adapters\/s3\/events\.ts:\d+:\d+/);
    expect(trace.join("\n")).not.toMatch(/(index|chunk-\w+)\.mjs:\d+/);
  });

  it("sweeper and reconciler: the scheduled event runs them to completion", async () => {
    for (const key of ["sweeper", "reconciler"] as const) {
      const fn = start(key);
      expect(await fn.invoke(await event("scheduled", {})), key).toBeNull();
    }
  });

  it("web-download: a job fetches the URL into the image's staging key", async () => {
    const data = randomBytes(32 * 1024);
    const server: Server = createServer((_req, res) =>
      res.writeHead(200, { "content-length": data.length }).end(data),
    );
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    try {
      const id = await createImage();
      // What the API's import route does before it dispatches the job: the image leaves `queued`.
      const table = getStack().table;
      const quota = new DynamoQuotaStore(itemClient(), table, UNLIMITED);
      const images = new DynamoImageRepository(itemClient(), table, quota);
      const lease = new Date(Date.now() + 900_000).toISOString();
      await images.transition(id, "startImport", { import_lease_until: lease });
      const fn = start("webDownload", { HANGAR_WEB_DOWNLOAD_ALLOW_LOOPBACK: "1" });
      const uri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/disk.raw`;
      expect(await fn.invoke({ imageId: id, uri, lease })).toEqual({ outcome: "stored" });
      const staged = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: `staging/${id}/upload` }));
      expect(staged.ContentLength).toBe(data.length);
      // Handed to the importer in place: still `importing`, under the lease the importer takes at once.
      expect(await images.get(id)).toMatchObject({ status: "importing", import_lease_until: HANDED_OVER });
    } finally {
      server.close();
    }
  });
});
