import { createHash, createHmac } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { LambdaInvokeError } from "../../../functions/adapters/aws/lambda-invoke.ts";
import { LambdaWebDownloads } from "../../../functions/adapters/http/web-download.ts";

// LambdaWebDownloads against a loopback stand-in of the Lambda API's Invoke operation. The stand-in checks
// the SigV4 signature with its own implementation of the algorithm, not the SDK's signer the adapter uses.
const CREDENTIALS = {
  AWS_ACCESS_KEY_ID: "AKIDEXAMPLE",
  AWS_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG",
  AWS_SESSION_TOKEN: "session",
};
const job = {
  imageId: "6f1c2a3b-1d2e-4f50-8a9b-0c1d2e3f4a5b",
  uri: "https://example.com/disk.img",
  lease: "2026-01-01T00:15:00.000Z",
};

interface Received {
  method: string;
  path: string;
  headers: IncomingMessage["headers"];
  body: string;
  signatureValid: boolean;
}

const sha256 = (data: string) => createHash("sha256").update(data).digest("hex");
const hmac = (key: string | Buffer, data: string) => createHmac("sha256", key).update(data).digest();
const rfc3986 = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/** SigV4 as AWS documents it, for a request without a query string (non-S3: path segments encoded again). */
function verifySigV4(req: Received, secret: string): boolean {
  const auth = /^AWS4-HMAC-SHA256 Credential=([^,]+), SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(
    String(req.headers.authorization),
  );
  if (!auth) return false;
  const [, credential = "", signedHeaders = "", signature] = auth;
  const [, date = "", region = "", service = "", terminator] = credential.split("/");
  const amzDate = String(req.headers["x-amz-date"]);
  const canonical = [
    req.method,
    req.path.split("/").map(rfc3986).join("/"),
    "",
    ...signedHeaders.split(";").map((h) => `${h}:${String(req.headers[h]).trim()}`),
    "",
    signedHeaders,
    sha256(req.body),
  ].join("\n");
  const scope = `${date}/${region}/${service}/${terminator}`;
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256(canonical)].join("\n");
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), service), "aws4_request");
  return createHmac("sha256", key).update(toSign).digest("hex") === signature;
}

let server: Server;
let endpoint: string;
const received: Received[] = [];
type Answer = { status: number; headers?: Record<string, string>; body?: string };
let answer: Answer = { status: 202 };
/** Answers given before `answer`, one per request. */
let firstAnswers: Answer[] = [];
const saved: Record<string, string | undefined> = {};

beforeAll(async () => {
  for (const name of [...Object.keys(CREDENTIALS), "AWS_PROFILE"]) saved[name] = process.env[name];
  delete process.env.AWS_PROFILE;
  Object.assign(process.env, CREDENTIALS);
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const r = {
        method: req.method ?? "",
        path: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
        signatureValid: false,
      };
      r.signatureValid = verifySigV4(r, CREDENTIALS.AWS_SECRET_ACCESS_KEY);
      received.push(r);
      const a = firstAnswers.shift() ?? answer;
      res.writeHead(a.status, a.headers ?? {});
      res.end(a.body ?? "");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

afterEach(() => {
  received.length = 0;
  answer = { status: 202 };
  firstAnswers = [];
});

describe("LambdaWebDownloads", () => {
  it("invokes the function asynchronously with a signed Invoke request", async () => {
    await new LambdaWebDownloads("hangar-prod-webDownload", "eu-west-1", endpoint).dispatch(job);
    expect(received).toHaveLength(1);
    const [r] = received;
    expect(r?.method).toBe("POST");
    expect(r?.path).toBe("/2015-03-31/functions/hangar-prod-webDownload/invocations");
    expect(r?.headers["x-amz-invocation-type"]).toBe("Event");
    expect(r?.headers["x-amz-security-token"]).toBe("session");
    expect(JSON.parse(r?.body ?? "")).toEqual(job);
    expect(String(r?.headers.authorization)).toMatch(
      /Credential=AKIDEXAMPLE\/\d{8}\/eu-west-1\/lambda\/aws4_request, SignedHeaders=[^,]*x-amz-invocation-type/,
    );
    expect(r?.signatureValid).toBe(true);
  });

  it("encodes a function ARN into the path, and the signature still holds", async () => {
    const arn = "arn:aws:lambda:eu-west-1:123456789012:function:web-download";
    await new LambdaWebDownloads(arn, "eu-west-1", endpoint).dispatch(job);
    expect(received[0]?.path).toBe(`/2015-03-31/functions/${encodeURIComponent(arn)}/invocations`);
    expect(received[0]?.signatureValid).toBe(true);
  });

  it("surfaces the Lambda API's refusal with its status, type and message", async () => {
    answer = {
      status: 404,
      headers: {
        "x-amzn-errortype": "ResourceNotFoundException:http://internal.amazon.com/",
        "content-type": "application/json",
      },
      body: JSON.stringify({ Type: "User", Message: "Function not found: web-download" }),
    };
    const error = await new LambdaWebDownloads("web-download", "eu-west-1", endpoint)
      .dispatch(job)
      .catch((e) => e);
    expect(error).toBeInstanceOf(LambdaInvokeError);
    expect(error).toMatchObject({ status: 404, type: "ResourceNotFoundException" });
    expect(error.message).toBe(
      "Lambda Invoke (Event) of web-download answered 404 ResourceNotFoundException: Function not found: web-download",
    );
  });

  it("tries throttling and Lambda's own faults again, three attempts in all, each signed anew", async () => {
    firstAnswers = [
      { status: 429, headers: { "x-amzn-errortype": "TooManyRequestsException" } },
      { status: 503, headers: { "x-amzn-errortype": "ServiceException" } },
    ];
    await new LambdaWebDownloads("f", "us-east-1", endpoint).dispatch(job);
    expect(received.map((r) => r.signatureValid)).toEqual([true, true, true]);

    received.length = 0;
    answer = { status: 500, headers: { "x-amzn-errortype": "ServiceException" } };
    await expect(new LambdaWebDownloads("f", "us-east-1", endpoint).dispatch(job)).rejects.toMatchObject({
      status: 500,
      type: "ServiceException",
    });
    expect(received).toHaveLength(3);
  });

  it("does not try a refusal again", async () => {
    answer = { status: 403, headers: { "x-amzn-errortype": "AccessDeniedException" } };
    await expect(new LambdaWebDownloads("f", "us-east-1", endpoint).dispatch(job)).rejects.toMatchObject({
      status: 403,
    });
    expect(received).toHaveLength(1);
  });

  it("treats any answer but 202 as a failure, and a dead endpoint as one too", async () => {
    answer = { status: 200, body: "{}" };
    await expect(new LambdaWebDownloads("f", "us-east-1", endpoint).dispatch(job)).rejects.toThrow(
      /answered 200/,
    );
    await expect(
      new LambdaWebDownloads("f", "us-east-1", "http://127.0.0.1:9").dispatch(job),
    ).rejects.toThrow();
  });
});
