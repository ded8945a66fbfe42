import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { decodeEventKey } from "../../../functions/adapters/s3/events.ts";
import { matchRoute, toPayloadV2, writeResult } from "../../../infra/local/lambda/api-gateway.ts";
import { API_ROUTES, FUNCTIONS } from "../../../infra/local/lambda/functions.ts";
import {
  encodeS3EventKey,
  MinioEnvelope,
  RecentEvents,
  toS3Event,
} from "../../../infra/local/lambda/s3-events.ts";
import { webhookTargets } from "../../../infra/local/services.ts";
import { retryDelaysFrom } from "../../../infra/local/stack.ts";

describe("local API Gateway: routes", () => {
  it("matches serverless.yml's routes as API Gateway does, and nothing else", () => {
    expect(matchRoute("GET", "/")).toEqual({ routeKey: "GET /" });
    expect(matchRoute("GET", "/versions")).toEqual({ routeKey: "GET /versions" });
    expect(matchRoute("OPTIONS", "/v2/images")).toEqual({
      routeKey: "OPTIONS /v2/{proxy+}",
      proxy: "images",
    });
    expect(matchRoute("DELETE", "/v2/images/abc/tags/x")).toEqual({
      routeKey: "ANY /v2/{proxy+}",
      proxy: "images/abc/tags/x",
    });
    // Every other path but the root goes to the app through the catch-all, which comes last.
    expect(matchRoute("POST", "/versions")).toEqual({ routeKey: "ANY /{proxy+}", proxy: "versions" });
    expect(matchRoute("GET", "/v2")).toEqual({ routeKey: "ANY /{proxy+}", proxy: "v2" });
    expect(matchRoute("GET", "/v2/")).toEqual({ routeKey: "ANY /{proxy+}", proxy: "v2/" });
    expect(matchRoute("GET", "/ui/")).toEqual({ routeKey: "ANY /{proxy+}", proxy: "ui/" });
    expect(matchRoute("POST", "/")).toBeUndefined();
  });
});

describe("local API Gateway: payload 2.0 events", () => {
  const request = (over: Partial<Parameters<typeof toPayloadV2>[0]> = {}) => ({
    method: "GET",
    url: "/v2/images?tag=a&tag=b&limit=5",
    rawHeaders: [
      "Host",
      "127.0.0.1:9292",
      "X-Auth-Token",
      "t",
      "Accept",
      "a/b",
      "accept",
      "c/d",
      "Cookie",
      "x=1; y=2",
    ],
    sourceIp: "127.0.0.1",
    body: Buffer.alloc(0),
    ...over,
  });

  it("keeps the raw query, joins repeated parameters and headers with commas, and moves cookies out", () => {
    const event = toPayloadV2(request(), { routeKey: "ANY /v2/{proxy+}", proxy: "images" }, new Date(0));
    expect(event).toMatchObject({
      version: "2.0",
      routeKey: "ANY /v2/{proxy+}",
      rawPath: "/v2/images",
      rawQueryString: "tag=a&tag=b&limit=5",
      queryStringParameters: { tag: "a,b", limit: "5" },
      cookies: ["x=1", "y=2"],
      headers: { host: "127.0.0.1:9292", "x-auth-token": "t", accept: "a/b,c/d" },
      pathParameters: { proxy: "images" },
      isBase64Encoded: false,
      requestContext: {
        domainName: "127.0.0.1:9292",
        http: { method: "GET", path: "/v2/images", sourceIp: "127.0.0.1" },
        routeKey: "ANY /v2/{proxy+}",
        stage: "$default",
        time: "01/Jan/1970:00:00:00 +0000",
        timeEpoch: 0,
      },
    });
    expect(event.headers).toMatchObject({ "x-forwarded-for": "127.0.0.1", "x-forwarded-port": "9292" });
    expect(event.headers.cookie).toBeUndefined();
    expect(event.body).toBeUndefined();
    expect(event.requestContext.requestId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("passes JSON as text and anything else (JSON-patch, octet-stream) base64-encoded", () => {
    const json = toPayloadV2(
      request({
        method: "POST",
        rawHeaders: ["Content-Type", "application/json"],
        body: Buffer.from('{"a":1}'),
      }),
      { routeKey: "ANY /v2/{proxy+}" },
    );
    expect(json).toMatchObject({ body: '{"a":1}', isBase64Encoded: false });
    const patchBody = '[{"op":"add","path":"/tags","value":["x"]}]';
    const patch = toPayloadV2(
      request({
        method: "PATCH",
        rawHeaders: ["Content-Type", "application/openstack-images-v2.1-json-patch"],
        body: Buffer.from(patchBody),
      }),
      { routeKey: "ANY /v2/{proxy+}" },
    );
    expect(patch.isBase64Encoded).toBe(true);
    expect(Buffer.from(patch.body ?? "", "base64").toString()).toBe(patchBody);
    const bytes = Buffer.from([0, 255, 1, 254]);
    const binary = toPayloadV2(request({ method: "PUT", rawHeaders: [], body: bytes }), {
      routeKey: "ANY /v2/{proxy+}",
    });
    expect(binary).toMatchObject({ body: bytes.toString("base64"), isBase64Encoded: true });
  });
});

describe("local API Gateway: the function's result as the response", () => {
  /** What `writeResult` wrote: the status, the headers and the body's bytes. */
  function written(result: unknown) {
    const out = { status: 0, headers: {} as Record<string, unknown>, body: Buffer.alloc(0) as Buffer };
    const res = {
      writeHead(status: number, headers: Record<string, unknown>) {
        out.status = status;
        out.headers = headers;
        return res;
      },
      end(body: string | Buffer) {
        out.body = typeof body === "string" ? Buffer.from(body, "utf8") : body;
      },
    };
    writeResult(res as never, result);
    return out;
  }

  it("sends a text body as UTF-8 with its length in bytes, and a base64 body as the bytes it encodes", () => {
    const text = written({
      statusCode: 200,
      headers: { "Content-Type": "application/json" },
      body: '{"n":"é✓"}',
    });
    expect(text).toMatchObject({ status: 200, headers: { "content-type": "application/json" } });
    expect(text.body.toString("utf8")).toBe('{"n":"é✓"}');
    expect(text.headers["content-length"]).toBe(String(text.body.length));
    expect(text.body.length).toBeGreaterThan('{"n":"é✓"}'.length);
    const bytes = Buffer.from([0, 255, 1, 254]);
    const binary = written({ statusCode: 201, body: bytes.toString("base64"), isBase64Encoded: true });
    expect(binary.body.equals(bytes)).toBe(true);
    expect(binary.headers["content-length"]).toBe("4");
    const empty = written({ statusCode: 204 });
    expect(empty).toMatchObject({ status: 204, headers: { "content-length": "0" } });
    expect(empty.body.length).toBe(0);
  });

  it("gives no query parameters to a request without a query string", () => {
    const event = toPayloadV2(
      { method: "GET", url: "/v2/images/x", rawHeaders: [], sourceIp: "127.0.0.1", body: Buffer.alloc(0) },
      { routeKey: "ANY /v2/{proxy+}" },
    );
    expect(event.rawQueryString).toBe("");
    expect(event.queryStringParameters).toBeUndefined();
  });
});

describe("local storage events: MinIO's envelope as the S3 event AWS sends", () => {
  const envelope = {
    EventName: "s3:ObjectCreated:CompleteMultipartUpload",
    Key: "hangar-local/staging/abc def/upload",
    Records: [
      {
        eventVersion: "2.0",
        eventSource: "minio:s3",
        awsRegion: "",
        eventTime: "2026-12-07T03:00:00.000Z",
        eventName: "s3:ObjectCreated:CompleteMultipartUpload",
        userIdentity: { principalId: "hangarlocal" },
        requestParameters: { principalId: "hangarlocal", region: "", sourceIPAddress: "127.0.0.1" },
        responseElements: { "x-amz-request-id": "17E0", "x-minio-origin-endpoint": "http://127.0.0.1:9000" },
        s3: {
          s3SchemaVersion: "1.0",
          configurationId: "hangar-import",
          bucket: {
            name: "hangar-local",
            ownerIdentity: { principalId: "hangarlocal" },
            arn: "arn:aws:s3:::hangar-local",
          },
          object: { key: "staging%2Fabc+def%2Fupload", size: 10, eTag: "e", sequencer: "17E" },
        },
      },
    ],
  };

  it("names events as AWS does and encodes keys as S3 does: + for a space, / left as it is", () => {
    const parsed = MinioEnvelope.parse(envelope);
    const [record] = toS3Event(parsed, "us-east-1").Records;
    expect(record).toMatchObject({
      eventVersion: "2.1",
      eventSource: "aws:s3",
      awsRegion: "us-east-1",
      eventName: "ObjectCreated:CompleteMultipartUpload",
      responseElements: { "x-amz-request-id": "17E0" },
      s3: {
        bucket: { name: "hangar-local", arn: "arn:aws:s3:::hangar-local" },
        object: { key: "staging/abc+def/upload", size: 10, eTag: "e", sequencer: "17E" },
      },
    });
    expect(decodeEventKey(record?.s3.object.key ?? "")).toBe("staging/abc def/upload");
  });

  it("encodes keys so that the importer's decoding gives them back", () => {
    for (const key of ["staging/0b7c/upload", "staging/a b/c", "staging/x+y=z&q", "staging/é"]) {
      expect(decodeEventKey(encodeS3EventKey(key))).toBe(key);
    }
    expect(encodeS3EventKey("staging/a b")).toBe("staging/a+b");
  });

  it("queues each event once when MinIO sends it twice (at once, then from its disk queue)", () => {
    const recent = new RecentEvents();
    const event = MinioEnvelope.parse(envelope);
    expect(recent.claim(event, 1000)).toBeDefined();
    expect(recent.claim(event, 3500)).toBeUndefined();
    // A new write of the same key is a new event: its sequencer differs.
    const again = structuredClone(event);
    (again.Records[0] as { s3: { object: { sequencer?: string } } }).s3.object.sequencer = "17F";
    expect(recent.claim(again, 3600)).toBeDefined();
    // A copy that could not be queued is given back, so MinIO's next copy is queued.
    const other = structuredClone(event);
    (other.Records[0] as { s3: { object: { sequencer?: string } } }).s3.object.sequencer = "180";
    recent.claim(other, 4000)?.release();
    expect(recent.claim(other, 4100)).toBeDefined();
    // Forgotten after ten minutes.
    expect(recent.claim(event, 1000 + 10 * 60_000 + 1)).toBeDefined();
  });

  it("with durable events, MinIO gets a queued target and an immediate one; without, one immediate target", () => {
    expect(webhookTargets(true)).toEqual([
      { id: "HANGAR", queued: true },
      { id: "HANGARNOW", queued: false },
    ]);
    expect(webhookTargets(false)).toEqual([{ id: "HANGAR", queued: false }]);
  });

  it("refuses what is not MinIO's envelope", () => {
    expect(MinioEnvelope.safeParse({ EventName: "x", Key: "y" }).success).toBe(false);
    expect(MinioEnvelope.safeParse({ ...envelope, Records: [] }).success).toBe(false);
    expect(MinioEnvelope.safeParse({ Records: [{ eventName: "ObjectCreated:Put" }] }).success).toBe(false);
  });
});

describe("local retry delays", () => {
  it("default to 1 and 2 seconds and read HANGAR_LOCAL_RETRY_DELAYS in seconds", () => {
    expect(retryDelaysFrom(undefined)).toEqual([1000, 2000]);
    expect(retryDelaysFrom("")).toEqual([1000, 2000]);
    expect(retryDelaysFrom("0.5, 3")).toEqual([500, 3000]);
    expect(() => retryDelaysFrom("soon")).toThrow(/HANGAR_LOCAL_RETRY_DELAYS/);
    expect(() => retryDelaysFrom("-1")).toThrow(/HANGAR_LOCAL_RETRY_DELAYS/);
  });
});

describe("the local functions follow serverless.yml", () => {
  const yml = readFileSync(join(import.meta.dirname, "..", "..", "..", "serverless.yml"), "utf8");
  const params = Object.fromEntries(
    [...yml.matchAll(/^ {4}(\w+): "?([^"\n#]+?)"?\s*$/gm)].map((m) => [m[1] ?? "", m[2] ?? ""]),
  );
  const resolve = (value: string) =>
    value.replace(/^\$\{param:(\w+)\}$/, (_, p: string) => params[p] ?? value);
  /** The lines of `functions.<key>` (indented by 4 or more under a 2-space key). */
  const block = (key: string) => {
    const start = yml.indexOf(`\n  ${key}:\n`, yml.indexOf("\nfunctions:\n"));
    expect(start, key).toBeGreaterThan(0);
    const rest = yml.slice(start + key.length + 5);
    const end = rest.search(/\n {0,2}\S/);
    return end < 0 ? rest : rest.slice(0, end);
  };
  const setting = (text: string, name: string) =>
    new RegExp(`^ {4}${name}: (.+)$`, "m").exec(text)?.[1]?.trim();

  it("timeouts, memory and asynchronous retries", () => {
    for (const spec of Object.values(FUNCTIONS)) {
      const text = block(spec.key);
      expect(Number(resolve(setting(text, "timeout") ?? "")), `${spec.key} timeout`).toBe(
        spec.timeoutSeconds,
      );
      expect(Number(resolve(setting(text, "memorySize") ?? "")), `${spec.key} memory`).toBe(spec.memoryMb);
      // Lambda retries an asynchronous invocation twice unless the function says otherwise.
      expect(Number(setting(text, "maximumRetryAttempts") ?? "2"), `${spec.key} retries`).toBe(
        spec.maximumRetryAttempts,
      );
      expect(text, spec.key).toContain(`artifact: dist/${spec.handler}.zip`);
    }
  });

  it("the api function's routes", () => {
    const text = block("api");
    const routes = [...text.matchAll(/method: (\w+)\n\s+path: (\S+)/g)].map((m) => `${m[1]} ${m[2]}`);
    expect(routes).toEqual([...API_ROUTES]);
  });
});
