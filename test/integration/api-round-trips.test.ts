import { randomUUID } from "node:crypto";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DynamoImageRepository } from "../../functions/adapters/dynamodb/image-repository.ts";
import { DynamoQuotaStore, LIMITS_CACHE_MS } from "../../functions/adapters/dynamodb/quota-store.ts";
import { loadConfig } from "../../functions/config.ts";
import { blankRecord } from "../../functions/core/image/create.ts";
import type { Logger } from "../../functions/core/ports.ts";
import { QuotaExceededError, UNLIMITED } from "../../functions/core/quota.ts";
import { createApiFunction } from "../../functions/roots/api.ts";
import { hangarEnv } from "../../infra/local/stack.ts";
import { getStack, itemClient, mintToken, signingKey } from "./setup/stack.ts";

/**
 * How many DynamoDB and S3 requests each API route sends (docs/api-round-trips.md). The API is built
 * in this process from its composition root, with its DynamoDB and S3 endpoints pointing at two
 * counting proxies in front of the stack's DynamoDB Local and MinIO: what is counted is what goes over
 * the wire, retries included.
 */

/** The operation of a request to S3, from its method, query and headers. */
function s3Operation(method: string, url: URL, headers: Record<string, unknown>): string {
  const q = url.searchParams;
  const copy = headers["x-amz-copy-source"] !== undefined;
  switch (method) {
    case "POST":
      if (q.has("uploads")) return "CreateMultipartUpload";
      if (q.has("uploadId")) return "CompleteMultipartUpload";
      if (q.has("delete")) return "DeleteObjects";
      return "POST";
    case "PUT":
      if (q.has("partNumber")) return copy ? "UploadPartCopy" : "UploadPart";
      return copy ? "CopyObject" : "PutObject";
    case "DELETE":
      return q.has("uploadId") ? "AbortMultipartUpload" : "DeleteObject";
    case "HEAD":
      return "HeadObject";
    default:
      if (q.has("uploads")) return "ListMultipartUploads";
      if (q.has("uploadId")) return "ListParts";
      if (q.get("list-type") === "2") return "ListObjectsV2";
      return "GetObject";
  }
}

/** A loopback proxy to `target` that names every request it forwards. */
async function countingProxy(
  target: string,
  operation: (req: import("node:http").IncomingMessage) => string,
) {
  const seen: string[] = [];
  /** The requests' bodies, in the order they were received in full. */
  const bodies: string[] = [];
  const to = new URL(target);
  const server: Server = createServer((req, res) => {
    seen.push(operation(req));
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => bodies.push(Buffer.concat(chunks).toString("utf8")));
    const upstream = request(
      { host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, seen, bodies, close: () => new Promise<void>((r) => server.close(() => r())) };
}

type Proxy = Awaited<ReturnType<typeof countingProxy>>;
let dynamo: Proxy;
let s3: Proxy;
let app: ReturnType<typeof createApiFunction>["app"];
const quiet: Logger = { info: () => {}, warn: () => {}, error: () => {} };
const savedEnv = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };

beforeAll(async () => {
  const info = getStack();
  dynamo = await countingProxy(info.dynamodbEndpoint, (req) =>
    String(req.headers["x-amz-target"] ?? "?").replace(/^DynamoDB_\d+\./, ""),
  );
  s3 = await countingProxy(info.s3Endpoint, (req) =>
    s3Operation(req.method ?? "GET", new URL(req.url ?? "/", "http://s3"), req.headers),
  );
  // The SDK's default credential chain reads these, as in a Lambda.
  process.env.AWS_ACCESS_KEY_ID = info.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = info.secretAccessKey;
  const config = loadConfig({
    ...hangarEnv(info, signingKey()),
    HANGAR_DYNAMODB_ENDPOINT: dynamo.url,
    HANGAR_S3_ENDPOINT: s3.url,
    HANGAR_S3_PUBLIC_ENDPOINT: info.s3Endpoint,
  });
  ({ app } = createApiFunction(config, { log: quiet, metrics: { add() {} } }));
});

afterAll(async () => {
  await Promise.all([dynamo?.close(), s3?.close()]);
  process.env.AWS_ACCESS_KEY_ID = savedEnv.id;
  process.env.AWS_SECRET_ACCESS_KEY = savedEnv.secret;
});

beforeEach(() => {
  dynamo.seen.length = 0;
  dynamo.bodies.length = 0;
  s3.seen.length = 0;
});

/** Sends one request to the app; returns its answer and the DynamoDB and S3 operations it caused. */
async function counted(path: string, init: RequestInit & { token: string }) {
  dynamo.seen.length = 0;
  dynamo.bodies.length = 0;
  s3.seen.length = 0;
  const headers = new Headers(init.headers);
  headers.set("x-auth-token", init.token);
  if (typeof init.body === "string" && !headers.has("content-type"))
    headers.set("content-type", "application/json");
  const res = await app.request(path, { ...init, headers });
  const body = res.status === 204 ? {} : ((await res.json()) as Record<string, unknown>);
  return { status: res.status, body, dynamo: [...dynamo.seen].sort(), s3: [...s3.seen].sort() };
}

async function project() {
  const name = `trips-${randomUUID().slice(0, 8)}`;
  return { name, token: await mintToken({ sub: `${name}-user`, project_id: name, roles: ["member"] }) };
}

const create = (token: string, fields: Record<string, unknown> = {}) =>
  counted("/v2/images", { method: "POST", body: JSON.stringify({ name: "trip", ...fields }), token });

describe("round trips per API route", () => {
  it("create: one transactional write; the project's limits are read by its first create only", async () => {
    const { token } = await project();
    const first = await create(token);
    expect(first.status).toBe(201);
    expect(first.dynamo).toEqual(["GetItem", "TransactWriteItems"]);
    expect(first.s3).toEqual([]);
    for (const fields of [{}, { upload_size: 1000 }, { disk_format: "qcow2", container_format: "bare" }]) {
      const next = await create(token, fields);
      expect(next.status).toBe(201);
      expect(next.dynamo).toEqual(["TransactWriteItems"]);
      expect(next.s3).toEqual([]);
    }
  });

  it("create with a multipart plan: one transactional write and the multipart upload's start", async () => {
    const { token } = await project();
    await create(token);
    const large = await create(token, { upload_size: 200 * 1024 * 1024 });
    expect(large.status).toBe(201);
    expect((large.body.upload as { method?: string } | undefined)?.method).toBe("multipart");
    expect(large.dynamo).toEqual(["TransactWriteItems"]);
    expect(large.s3).toEqual(["CreateMultipartUpload"]);
  });

  it("show: one read, for its owner, an admin, and anyone when the image is for everyone", async () => {
    const { token } = await project();
    const other = await project();
    const id = String((await create(token, { visibility: "community" })).body.id);
    for (const who of [token, getStack().tokens.admin, other.token]) {
      const shown = await counted(`/v2/images/${id}`, { token: who });
      expect(shown.status).toBe(200);
      expect(shown.dynamo).toEqual(["GetItem"]);
      expect(shown.s3).toEqual([]);
    }
  });

  it("a list page: one query for an admin or one visibility; one per source, in parallel, otherwise", async () => {
    const { token } = await project();
    for (let i = 0; i < 3; i++) await create(token, { visibility: "private" });
    const admin = await counted("/v2/images?limit=2", { token: getStack().tokens.admin });
    expect(admin.status).toBe(200);
    expect(admin.dynamo).toEqual(["Query"]);
    const own = await counted("/v2/images?visibility=private&limit=2", { token });
    expect(own.status).toBe(200);
    expect((own.body.images as unknown[]).length).toBe(2);
    expect(own.dynamo).toEqual(["Query"]);
    // Glance's default list: the project's own images, the public ones and those shared with it.
    const mixed = await counted("/v2/images", { token });
    expect(mixed.status).toBe(200);
    expect(mixed.dynamo).toEqual(["Query", "Query", "Query"]);
    for (const r of [admin, own, mixed]) expect(r.s3).toEqual([]);
  });

  it("a list page of shared images reads their records in one batch", async () => {
    const owner = await project();
    const member = await project();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const id = String((await create(owner.token, { visibility: "shared" })).body.id);
      ids.push(id);
      const added = await counted(`/v2/images/${id}/members`, {
        method: "POST",
        body: JSON.stringify({ member: member.name }),
        token: owner.token,
      });
      expect(added.status).toBe(200);
      const accepted = await counted(`/v2/images/${id}/members/${member.name}`, {
        method: "PUT",
        body: JSON.stringify({ status: "accepted" }),
        token: member.token,
      });
      expect(accepted.status).toBe(200);
    }
    const shared = await counted("/v2/images?visibility=shared", { token: member.token });
    expect(shared.status).toBe(200);
    expect((shared.body.images as { id: string }[]).map((i) => i.id).sort()).toEqual([...ids].sort());
    expect(shared.dynamo).toEqual(["BatchGetItem", "Query", "Query"]);
  });

  it("a show right after a change shows it: the show's one read is strongly consistent", async () => {
    // DynamoDB Local always reads what was written; DynamoDB does only when the read asks for it, so the
    // request itself is what keeps a show of a state change right after it truthful in AWS.
    const { token } = await project();
    const id = String((await create(token)).body.id);
    const patched = await counted(`/v2/images/${id}`, {
      method: "PATCH",
      headers: { "content-type": "application/openstack-images-v2.1-json-patch" },
      body: JSON.stringify([{ op: "replace", path: "/name", value: "changed" }]),
      token,
    });
    expect(patched.status).toBe(200);
    const shown = await counted(`/v2/images/${id}`, { token });
    expect(shown.body.name).toBe("changed");
    expect(shown.dynamo).toEqual(["GetItem"]);
    expect(dynamo.bodies.map((b) => JSON.parse(b) as { ConsistentRead?: boolean })).toEqual([
      expect.objectContaining({ ConsistentRead: true }),
    ]);
  });

  it("update: one read and one conditional write", async () => {
    const { token } = await project();
    const id = String((await create(token)).body.id);
    const patched = await counted(`/v2/images/${id}`, {
      method: "PATCH",
      headers: { "content-type": "application/openstack-images-v2.1-json-patch" },
      body: JSON.stringify([{ op: "replace", path: "/name", value: "renamed" }]),
      token,
    });
    expect(patched.status).toBe(200);
    expect(patched.dynamo).toEqual(["GetItem", "UpdateItem"]);
    expect(patched.s3).toEqual([]);
  });

  it("quota usage reads usage and limits as they are now", async () => {
    const { token } = await project();
    await create(token);
    const usage = await counted("/v2/info/usage", { token });
    expect(usage.status).toBe(200);
    expect(usage.dynamo).toEqual(["GetItem", "GetItem"]);
  });
});

describe("limits kept by a warm function", () => {
  const newImage = (owner: string) => ({
    ...blankRecord(randomUUID(), owner, new Date().toISOString()),
    name: "limits",
  });

  /** A function's quota store and image records, on a clock the test moves; and another function's. */
  function functions() {
    const { table } = getStack();
    const client = itemClient();
    let now = 1_000_000;
    const kept = new DynamoQuotaStore(client, table, UNLIMITED, { now: () => now });
    const elsewhere = new DynamoQuotaStore(client, table, UNLIMITED, { limitsCacheMs: 0 });
    return {
      images: new DynamoImageRepository(client, table, kept),
      elsewhere,
      later: (ms: number) => {
        now += ms;
      },
    };
  }

  it("a limit lowered by another function applies here once the kept copy is older than the cache time", async () => {
    const { images, elsewhere, later } = functions();
    const owner = `limits-${randomUUID().slice(0, 8)}`;
    await elsewhere.setLimits(owner, { image_count_total: 5 });
    await images.create(newImage(owner));
    await elsewhere.setLimits(owner, { image_count_total: 1 });
    // Still the copy read at the first create: the second image is let in.
    await images.create(newImage(owner));
    later(LIMITS_CACHE_MS - 1);
    await images.create(newImage(owner));
    later(2);
    const refused = await images.create(newImage(owner)).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(QuotaExceededError);
    expect((refused as QuotaExceededError).limit).toBe(1);
  });

  it("a limit raised by another function applies at once: a refusal is decided on limits read then", async () => {
    const { images, elsewhere } = functions();
    const owner = `limits-${randomUUID().slice(0, 8)}`;
    await elsewhere.setLimits(owner, { image_count_total: 1 });
    await images.create(newImage(owner));
    await expect(images.create(newImage(owner))).rejects.toBeInstanceOf(QuotaExceededError);
    await elsewhere.setLimits(owner, { image_count_total: 3 });
    await images.create(newImage(owner));
    await images.create(newImage(owner));
    await expect(images.create(newImage(owner))).rejects.toBeInstanceOf(QuotaExceededError);
  });

  it("an upload larger than a kept limit by itself is checked against the limit read now", async () => {
    const { images, elsewhere } = functions();
    const owner = `limits-${randomUUID().slice(0, 8)}`;
    await elsewhere.setLimits(owner, { image_stage_total: 1000 });
    await images.create(newImage(owner));
    await elsewhere.setLimits(owner, { image_stage_total: 10_000 });
    await images.create({ ...newImage(owner), upload_size: 5000 });
  });
});
