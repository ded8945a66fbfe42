import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DescribeTableCommand } from "@aws-sdk/client-dynamodb";
import {
  GetBucketNotificationConfigurationCommand,
  HeadBucketCommand,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { createLocalJWKSet, jwtVerify } from "jose";
import { afterAll, describe, expect, inject, it } from "vitest";
import { tableDefinition } from "../../functions/adapters/dynamodb/table.ts";
import { startStack } from "../../infra/local/stack.ts";
import { publicJwk } from "../../infra/local/tokens.ts";
import {
  api,
  assertLoopback,
  dynamoDbClient,
  getStack,
  mintToken,
  ownStackOptions,
  s3Client,
  stackLog,
  waitForLog,
  waitForStatus,
} from "./setup/stack.ts";

const s3 = s3Client();
const ddb = dynamoDbClient();
afterAll(() => {
  s3.destroy();
  ddb.destroy();
});

describe("local stack", () => {
  it("serves the API: GET /versions answers 200 with the v2 versions document", async () => {
    const res = await api("/versions");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { versions: { id: string; links: { href: string }[] }[] };
    expect(body.versions.some((v) => v.id.startsWith("v2"))).toBe(true);
    // Links a client can follow: plain HTTP on the local port, as the gateway's X-Forwarded-Proto says.
    expect(body.versions[0]?.links[0]?.href).toBe(`${getStack().apiUrl}/v2/`);
  });

  it("answers every request from the api function's own process, and starts it again when it dies", async () => {
    const apiPid = async () => {
      const started = (await stackLog()).filter((l) => l.includes("[api] runtime started (pid "));
      const pid = Number(/pid (\d+)/.exec(started.at(-1) ?? "")?.[1]);
      expect(pid).toBeGreaterThan(1);
      return pid;
    };
    const pid = await apiPid();
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
    expect(cmdline).toContain("bootstrap.mjs");
    expect(cmdline).toContain(join("api", "index.mjs"));
    // Frozen, the child cannot answer: the request waits for it, and is answered once it runs again.
    process.kill(pid, "SIGSTOP");
    let answered = false;
    const pending = api("/versions").then((res) => {
      answered = true;
      return res;
    });
    try {
      await new Promise((r) => setTimeout(r, 700));
      expect(answered).toBe(false);
    } finally {
      process.kill(pid, "SIGCONT");
    }
    expect((await pending).status).toBe(200);
    // A dead runtime is replaced on the next invocation, as Lambda starts a new container.
    process.kill(pid, "SIGKILL");
    await waitForLog(`[api] runtime exited (signal SIGKILL)`);
    const after = await api("/versions");
    expect(after.status).toBe(200);
    expect(await apiPid()).not.toBe(pid);
  });

  it("answers a path no route of serverless.yml matches as API Gateway does, without the function", async () => {
    const res = await api("/", { method: "POST" });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ message: "Not Found" });
    expect(res.headers.get("x-openstack-request-id")).toBeNull();
  });

  it("any other path reaches the app through the catch-all route: Glance's 404", async () => {
    for (const path of ["/nowhere", "/v2/", "/v2/images/.."]) {
      const res = await api(path, {}, getStack().tokens.alice);
      expect(res.status, path).toBe(404);
      expect(((await res.json()) as { error: { code: number } }).error.code).toBe(404);
      expect(res.headers.get("x-openstack-request-id")).toMatch(/^req-/);
    }
  });

  it("a second start from the same home leaves the running stack alone and says where it is", async () => {
    const { home } = inject("hangarStack");
    const before = JSON.parse(await readFile(join(home, "children.json"), "utf8")) as { pid: number }[];
    await expect(startStack(await ownStackOptions(home))).rejects.toThrow(
      `a local stack is already running from ${home} (pid `,
    );
    await expect(
      startStack(await ownStackOptions(home, { apiPort: 1, s3Port: 1, dynamodbPort: 1 })),
    ).rejects.toThrow(`API ${getStack().apiUrl}, endpoints in ${join(home, "local.json")}`);
    // Its services still run, and its local.json is still there.
    for (const { pid } of before) expect(() => process.kill(pid, 0)).not.toThrow();
    expect(JSON.parse(await readFile(join(home, "local.json"), "utf8"))).toEqual(getStack());
    expect((await api("/versions")).status).toBe(200);
    await s3.send(new HeadBucketCommand({ Bucket: getStack().bucket }));
  });

  it("serves the Lambda Invoke API on loopback: RequestResponse, Event (202) and Lambda's errors", async () => {
    const endpoint = getStack().lambdaEndpoint;
    assertLoopback(endpoint);
    const invoke = (name: string, body: unknown, type?: string) =>
      fetch(`${endpoint}/2015-03-31/functions/${name}/invocations`, {
        method: "POST",
        headers: type ? { "x-amz-invocation-type": type } : {},
        body: JSON.stringify(body),
      });
    const empty = await invoke("hangar-local-importer", { Records: [] });
    expect(empty.status).toBe(200);
    expect(empty.headers.get("x-amz-function-error")).toBeNull();
    expect(await empty.json()).toBeNull();
    const broken = await invoke("hangar-local-importer", { Records: "no" });
    expect(broken.status).toBe(200);
    expect(broken.headers.get("x-amz-function-error")).toBe("Unhandled");
    expect(await broken.json()).toMatchObject({ errorType: "InvalidStorageEventError" });
    const unknown = await invoke("hangar-local-nothing", {}, "Event");
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ __type: "ResourceNotFoundException" });
    const queued = await invoke("hangar-local-importer", { Records: [] }, "Event");
    expect(queued.status).toBe(202);
  });

  it("has created the table with Hangar's key schema", async () => {
    const { Table } = await ddb.send(new DescribeTableCommand({ TableName: getStack().table }));
    expect(Table?.TableStatus).toBe("ACTIVE");
    expect(Table?.KeySchema).toEqual([
      { AttributeName: "pk", KeyType: "HASH" },
      { AttributeName: "sk", KeyType: "RANGE" },
    ]);
    const wanted = tableDefinition(getStack().table).GlobalSecondaryIndexes?.map((i) => i.IndexName);
    expect(Table?.GlobalSecondaryIndexes?.map((i) => i.IndexName).sort()).toEqual(wanted?.sort());
  });

  it("has created the bucket and routes staging/ creations to the webhook target", async () => {
    const bucket = getStack().bucket;
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    const config = await s3.send(new GetBucketNotificationConfigurationCommand({ Bucket: bucket }));
    expect(config.QueueConfigurations).toHaveLength(1);
    const [queue] = config.QueueConfigurations ?? [];
    expect(queue?.QueueArn).toBe("arn:minio:sqs::HANGAR:webhook");
    expect(queue?.Events).toEqual(["s3:ObjectCreated:*"]);
    expect(queue?.Filter?.Key?.FilterRules).toEqual([{ Name: "prefix", Value: "staging/" }]);
  });

  it("writes local.json with every key, loopback endpoints and demo tokens the API accepts", async () => {
    const home = inject("hangarStack").home;
    const written = JSON.parse(await readFile(join(home, "local.json"), "utf8")) as Record<string, unknown>;
    expect(written).toEqual(getStack());
    for (const key of [
      "apiUrl",
      "s3Endpoint",
      "dynamodbEndpoint",
      "region",
      "bucket",
      "table",
      "accessKeyId",
      "secretAccessKey",
      "jwtIssuer",
    ]) {
      expect(typeof written[key], key).toBe("string");
    }
    const info = getStack();
    expect(info).toMatchObject({ region: "us-east-1", bucket: "hangar-local", table: "hangar-local" });
    expect(info.jwtIssuer).toBe("hangar-local");
    for (const url of [info.apiUrl, info.s3Endpoint, info.dynamodbEndpoint]) assertLoopback(url);

    const keys = createLocalJWKSet({ keys: [publicJwk(inject("hangarStack").signingKey)] });
    const expected = {
      admin: { project_id: "project-admin", roles: ["admin", "member"] },
      alice: { project_id: "project-alice", roles: ["member"] },
      bob: { project_id: "project-bob", roles: ["member"] },
    };
    for (const [name, claims] of Object.entries(expected)) {
      const token = info.tokens[name as keyof typeof expected];
      const { payload } = await jwtVerify(token, keys, { issuer: "hangar-local", audience: "hangar" });
      expect(payload).toMatchObject({ sub: name, ...claims });
      // 30 days, give or take the time the run has taken so far.
      expect((payload.exp ?? 0) - (payload.iat ?? 0)).toBe(30 * 24 * 3600);
      const res = await api("/v2/images", {}, token);
      expect(res.status, `${name}'s token`).toBe(200);
    }
  });

  it("refuses requests without a valid token, so the demo tokens are what grants access", async () => {
    expect((await api("/v2/images")).status).toBe(401);
    const forged = await mintToken(
      { sub: "mallory", project_id: "p", roles: ["admin"] },
      { issuer: "elsewhere" },
    );
    expect((await api("/v2/images", {}, forged)).status).toBe(401);
  });

  it("delivers an object created under staging/ to the importer through MinIO's webhook, and nothing else", async () => {
    const bucket = getStack().bucket;
    const outside = `images/${randomUUID()}`;
    const staged = `staging/${randomUUID()}`;
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: outside, Body: "not an event" }));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: staged, Body: "no image record for this" }));
    await waitForLog(`storage event received: ObjectCreated:Put ${bucket}/${staged}`);
    // The importer function ran to an outcome: a staged object without an image record is not imported.
    const handled = await waitForLog(`${bucket}/${staged}: `);
    expect(handled).toMatch(/storage event (handled|failed)/);
    expect((await stackLog()).some((l) => l.includes(outside))).toBe(false);
  });

  it("refuses webhook deliveries without MinIO's bearer token, and hands nothing to the importer", async () => {
    const url = inject("hangarStack").webhookUrl;
    assertLoopback(url);
    const key = `hangar-local/staging/${randomUUID()}`;
    const forged = JSON.stringify({ EventName: "s3:ObjectCreated:Put", Key: key });
    const anonymous = await fetch(url, { method: "POST", body: forged });
    expect(anonymous.status).toBe(401);
    const wrong = await fetch(url, {
      method: "POST",
      body: forged,
      headers: { authorization: "Bearer guess" },
    });
    expect(wrong.status).toBe(401);
    const log = await stackLog();
    expect(log.filter((l) => l.includes("bad or missing webhook token")).length).toBeGreaterThanOrEqual(2);
    expect(log.some((l) => l.includes(key))).toBe(false);
  });

  it("imports an upload end to end: create, PUT to the presigned link, active with checksums", async () => {
    const token = getStack().tokens.alice;
    const data = randomBytes(1024 * 1024);
    const created = await api(
      "/v2/images",
      {
        method: "POST",
        body: JSON.stringify({
          name: `local-stack-${randomUUID()}`,
          disk_format: "raw",
          container_format: "bare",
        }),
      },
      token,
    );
    expect(created.status).toBe(201);
    const image = (await created.json()) as {
      id: string;
      status: string;
      upload: { method: string; url: string; headers: Record<string, string> };
    };
    expect(image.status).toBe("queued");
    assertLoopback(image.upload.url);
    const put = await fetch(image.upload.url, {
      method: image.upload.method,
      headers: image.upload.headers,
      body: data,
    });
    expect(put.status).toBe(200);
    await put.arrayBuffer();

    const active = await waitForStatus(image.id, "active", token, 30_000);
    expect(active.size).toBe(data.length);
    expect(active.checksum).toBe(createHash("md5").update(data).digest("hex"));
    expect(active.os_hash_value).toBe(createHash("sha512").update(data).digest("hex"));
  });
});

describe("npm start's durable event queues", () => {
  it("delivers each bucket event at once and once only, though MinIO also replays it from its disk queue", async () => {
    const home = await mkdtemp(join(tmpdir(), "hangar-durable-now-"));
    const lines: { at: number; line: string }[] = [];
    const stack = await startStack(
      await ownStackOptions(home, {
        durableEvents: true,
        log: (line) => lines.push({ at: Date.now(), line }),
      }),
    );
    const client = new S3Client({
      endpoint: stack.info.s3Endpoint,
      region: stack.info.region,
      forcePathStyle: true,
      credentials: { accessKeyId: stack.info.accessKeyId, secretAccessKey: stack.info.secretAccessKey },
    });
    try {
      const bucket = stack.info.bucket;
      const received = (key: string) =>
        lines.filter((l) => l.line.includes(`storage event received: ObjectCreated:Put ${bucket}/${key}`));
      const delays: number[] = [];
      const keys: string[] = [];
      // MinIO replays its disk queue on a 3-second tick: through it alone, most of these would wait
      // more than a second (each one 0-3 s).
      for (let i = 0; i < 5; i++) {
        const key = `staging/${randomUUID()}`;
        keys.push(key);
        await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: "x" }));
        const stored = Date.now();
        const deadline = stored + 10_000;
        while (received(key).length === 0 && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 20));
        delays.push((received(key)[0]?.at ?? Number.POSITIVE_INFINITY) - stored);
      }
      expect(delays.filter((ms) => ms > 1000)).toEqual([]);
      // The queued copies arrive within one more tick, are acknowledged (MinIO's queue empties) and are
      // not queued a second time.
      const queueDir = join(home, "minio-events");
      const queued = async () =>
        (await readdir(queueDir, { recursive: true })).filter((f) => f.endsWith(".event")).length;
      const deadline = Date.now() + 10_000;
      while ((await queued()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(await queued()).toBe(0);
      await new Promise((r) => setTimeout(r, 500));
      for (const key of keys) expect(received(key)).toHaveLength(1);
    } finally {
      client.destroy();
      await stack.stop();
      await rm(home, { recursive: true, force: true });
    }
  }, 120_000);

  it("delivers through MinIO's on-disk queue, and events still queued at stop (MinIO's or the functions') are delivered after a restart", async () => {
    const home = await mkdtemp(join(tmpdir(), "hangar-durable-"));
    const lines: string[] = [];
    const start = async () =>
      await startStack(await ownStackOptions(home, { durableEvents: true, log: (line) => lines.push(line) }));
    const until = async (text: string) => {
      const deadline = Date.now() + 20_000;
      while (!lines.some((l) => l.includes(text))) {
        if (Date.now() > deadline) throw new Error(`no log line with ${text}; log:\n${lines.join("\n")}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    let stack = await start();
    try {
      const bucket = stack.info.bucket;
      const first = `staging/${randomUUID()}`;
      const second = `staging/${randomUUID()}`;
      const third = `staging/${randomUUID()}`;
      const put = async (key: string) => {
        const client = new S3Client({
          endpoint: stack.info.s3Endpoint,
          region: stack.info.region,
          forcePathStyle: true,
          credentials: { accessKeyId: stack.info.accessKeyId, secretAccessKey: stack.info.secretAccessKey },
        });
        await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: "x" }));
        client.destroy();
      };
      await put(first);
      await until(`storage event handled: ObjectCreated:Put ${bucket}/${first}`);
      // MinIO has just polled its queue (every 3 s), so this one most likely waits on disk through the stop.
      await put(second);
      await stack.stop();
      // As if the stack had died after acknowledging an event and before the importer was done with it.
      const queued = {
        id: randomUUID(),
        functionName: "hangar-local-importer",
        event: JSON.parse(
          (await readFile(join(import.meta.dirname, "..", "fixtures", "events", "s3-put.json"), "utf8"))
            .replaceAll("{{bucket}}", bucket)
            .replaceAll("staging/{{imageId}}/upload", third)
            .replaceAll("{{etag}}", "x"),
        ) as unknown,
        queuedAt: new Date().toISOString(),
        attempts: [],
      };
      await writeFile(
        join(home, "async-invocations", `000000000000001-${queued.id}.json`),
        JSON.stringify(queued),
      );
      stack = await start();
      await until(`storage event handled: ObjectCreated:Put ${bucket}/${second}`);
      await until(`storage event redelivered after a restart: ObjectCreated:Put ${bucket}/${third}`);
      await until(`storage event handled: ObjectCreated:Put ${bucket}/${third}`);
      expect(
        lines.filter((l) => l.includes(`storage event handled: ObjectCreated:Put ${bucket}/${first}`)),
      ).toHaveLength(1);
    } finally {
      await stack.stop();
      await rm(home, { recursive: true, force: true });
    }
  }, 120_000);
});
