import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";

// Runs a built bundle (dist/<name>/index.mjs) the way Lambda does: plain ESM under Node, configured by
// its environment alone, its `handler` called with AWS's event shapes. No test runner sits in between.

const run = promisify(execFile);

export interface HttpRequest {
  method: string;
  /** Path with an optional query string, e.g. `/v2/images?limit=2`. */
  path: string;
  headers?: Record<string, string>;
}

/**
 * The API Gateway HTTP API (payload format 2.0) event for a request without a body, as the
 * `ANY /v2/{proxy+}` route delivers it: header names lower-cased, the query string raw and parsed.
 */
export function httpApiEvent(request: HttpRequest, routeKey = "ANY /v2/{proxy+}"): APIGatewayProxyEventV2 {
  const url = new URL(request.path, "https://api.example.test");
  const headers: Record<string, string> = { host: url.host, "user-agent": "hangar-test" };
  for (const [name, value] of Object.entries(request.headers ?? {})) headers[name.toLowerCase()] = value;
  const query: Record<string, string> = {};
  // API Gateway joins repeated parameters with commas.
  for (const [name, value] of url.searchParams)
    query[name] = name in query ? `${query[name]},${value}` : value;
  const now = Date.now();
  return {
    version: "2.0",
    routeKey,
    rawPath: url.pathname,
    rawQueryString: url.search.slice(1),
    headers,
    ...(url.search ? { queryStringParameters: query } : {}),
    ...(routeKey.includes("{proxy+}")
      ? { pathParameters: { proxy: url.pathname.replace(/^\/v2\//, "") } }
      : {}),
    requestContext: {
      accountId: "123456789012",
      apiId: "hangartest",
      domainName: url.host,
      domainPrefix: url.host.split(".")[0] ?? "",
      http: {
        method: request.method,
        path: url.pathname,
        protocol: "HTTP/1.1",
        sourceIp: "192.0.2.1",
        userAgent: headers["user-agent"] ?? "",
      },
      requestId: randomUUID(),
      routeKey,
      stage: "$default",
      time: new Date(now).toUTCString(),
      timeEpoch: now,
    },
    isBase64Encoded: false,
  };
}

const MARK = "\n--hangar-test-results--\n";

/**
 * Imports `bundle` in a fresh Node process with exactly `env` (plus PATH), calls its `handler` with
 * each event in turn and returns what it returned (or `{ threw: <error name> }`), and what the
 * function logged (stdout and stderr).
 */
export async function invokeBundle(
  bundle: string,
  env: Record<string, string>,
  events: unknown[],
  timeout = 30_000,
): Promise<{ results: unknown[]; log: string }> {
  const script = `
    const { handler } = await import(${JSON.stringify(pathToFileURL(bundle).href)});
    const context = { functionName: "hangar-test", awsRequestId: "test", getRemainingTimeInMillis: () => 29000 };
    const results = [];
    for (const event of JSON.parse(process.env.HANGAR_TEST_EVENTS)) {
      try { results.push(await handler(event, context)); } catch (e) { results.push({ threw: e.name }); }
    }
    process.stdout.write(${JSON.stringify(MARK)} + JSON.stringify(results));`;
  const { stdout, stderr } = await run(process.execPath, ["--input-type=module", "-e", script], {
    env: {
      PATH: process.env.PATH ?? "",
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
      ...env,
      HANGAR_TEST_EVENTS: JSON.stringify(events),
    },
    timeout,
    maxBuffer: 16 * 1024 * 1024,
  });
  const at = stdout.lastIndexOf(MARK);
  if (at < 0) throw new Error(`the bundle printed no results:\n${stdout}`);
  return {
    results: JSON.parse(stdout.slice(at + MARK.length)) as unknown[],
    log: stdout.slice(0, at) + stderr,
  };
}

/** An HTTP API response reduced to what a caller sees: status, content type and parsed JSON body. */
export function seen(result: unknown): { status: number; type: string | undefined; body: unknown } {
  const r = result as APIGatewayProxyStructuredResultV2;
  const headers = Object.fromEntries(Object.entries(r.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  const text = r.isBase64Encoded ? Buffer.from(r.body ?? "", "base64").toString() : (r.body ?? "");
  return { status: r.statusCode ?? 0, type: headers["content-type"]?.toString(), body: JSON.parse(text) };
}
