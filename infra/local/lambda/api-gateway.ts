import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { API_ROUTES } from "./functions.ts";
import { InvocationError } from "./runtime.ts";

/** API Gateway's payload quota: requests above 10 MB never reach the function. */
const MAX_REQUEST_BYTES = 10 * 1024 * 1024;

/** Content types API Gateway passes as text; everything else reaches the function base64-encoded. */
const TEXT_TYPES =
  /^(text\/[^;]*|application\/([^;]*[+/])?(json|xml|javascript|x-www-form-urlencoded))\s*(;|$)/i;

/** The route of serverless.yml that API Gateway would pick for a request, or undefined (404). */
export function matchRoute(method: string, path: string): { routeKey: string; proxy?: string } | undefined {
  for (const route of API_ROUTES) {
    const [routeMethod, routePath = ""] = route.split(" ");
    if (routeMethod !== "ANY" && routeMethod !== method) continue;
    if (routePath.endsWith("/{proxy+}")) {
      const prefix = routePath.slice(0, -"{proxy+}".length);
      if (path.startsWith(prefix) && path.length > prefix.length)
        return { routeKey: route, proxy: path.slice(prefix.length) };
    } else if (routePath === path) return { routeKey: route };
  }
  return undefined;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** `07/Dec/2026:03:04:05 +0000`, API Gateway's `requestContext.time`. */
function gatewayTime(date: Date): string {
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${pad(date.getUTCDate())}/${MONTHS[date.getUTCMonth()]}/${date.getUTCFullYear()}:${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} +0000`;
}

/** An HTTP request as the payload-2.0 event API Gateway's HTTP API hands to the function. */
export function toPayloadV2(
  req: { method: string; url: string; rawHeaders: string[]; sourceIp: string; body: Buffer },
  route: { routeKey: string; proxy?: string },
  now = new Date(),
): APIGatewayProxyEventV2 {
  const [rawPath = "/", rawQueryString = ""] = splitOnce(req.url, "?");
  const headers: Record<string, string> = {};
  const cookies: string[] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = (req.rawHeaders[i] ?? "").toLowerCase();
    const value = req.rawHeaders[i + 1] ?? "";
    if (name === "cookie") {
      cookies.push(
        ...value
          .split(";")
          .map((c) => c.trim())
          .filter(Boolean),
      );
      continue;
    }
    // The gateway has read the whole body; the function gets it in one piece.
    if (name === "transfer-encoding") continue;
    // Repeated headers reach the function as one, values joined by commas.
    headers[name] = headers[name] === undefined ? value : `${headers[name]},${value}`;
  }
  // What API Gateway adds about the connection it took (here plain HTTP on loopback).
  headers["x-forwarded-for"] = headers["x-forwarded-for"]
    ? `${headers["x-forwarded-for"]}, ${req.sourceIp}`
    : req.sourceIp;
  headers["x-forwarded-proto"] = "http";
  headers["x-forwarded-port"] = (headers.host ?? "").split(":")[1] ?? "80";
  const query: Record<string, string> = {};
  if (rawQueryString) {
    for (const [key, value] of new URLSearchParams(rawQueryString)) {
      query[key] = query[key] === undefined ? value : `${query[key]},${value}`;
    }
  }
  const contentType = headers["content-type"] ?? "";
  const isText = req.body.length === 0 || TEXT_TYPES.test(contentType);
  const domainName = headers.host ?? "localhost";
  const requestId = randomUUID();
  return {
    version: "2.0",
    routeKey: route.routeKey,
    rawPath,
    rawQueryString,
    ...(cookies.length > 0 ? { cookies } : {}),
    headers,
    ...(rawQueryString ? { queryStringParameters: query } : {}),
    ...(route.proxy !== undefined ? { pathParameters: { proxy: safeDecode(route.proxy) } } : {}),
    requestContext: {
      accountId: "000000000000",
      apiId: "local",
      domainName,
      domainPrefix: domainName.split(".")[0] ?? domainName,
      http: {
        method: req.method,
        path: safeDecode(rawPath),
        protocol: "HTTP/1.1",
        sourceIp: req.sourceIp,
        userAgent: headers["user-agent"] ?? "",
      },
      requestId,
      routeKey: route.routeKey,
      stage: "$default",
      time: gatewayTime(now),
      timeEpoch: now.getTime(),
    },
    ...(req.body.length > 0
      ? { body: isText ? req.body.toString("utf8") : req.body.toString("base64"), isBase64Encoded: !isText }
      : { isBase64Encoded: false }),
  };
}

/** Writes the function's payload-2.0 result as API Gateway does: status, headers, cookies, body. */
export function writeResult(res: ServerResponse, result: unknown): void {
  if (typeof result !== "object" || result === null || !("statusCode" in result)) {
    // A result without a status code is a JSON body with 200 (API Gateway's rule for payload 2.0).
    const body = JSON.stringify(result ?? null);
    res.writeHead(200, { "content-type": "application/json" }).end(body);
    return;
  }
  const r = result as APIGatewayProxyStructuredResultV2 & { multiValueHeaders?: Record<string, string[]> };
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(r.headers ?? {})) headers[k.toLowerCase()] = String(v);
  for (const [k, values] of Object.entries(r.multiValueHeaders ?? {}))
    headers[k.toLowerCase()] = values.map(String);
  if (r.cookies && r.cookies.length > 0) headers["set-cookie"] = r.cookies;
  // A text body is written as the string it is, not copied into a buffer first.
  const body = r.body === undefined ? "" : r.isBase64Encoded ? Buffer.from(r.body, "base64") : r.body;
  headers["content-length"] = String(typeof body === "string" ? Buffer.byteLength(body) : body.length);
  res.writeHead(r.statusCode ?? 200, headers).end(body);
}

function gatewayError(res: ServerResponse, status: number, message: string): void {
  const body = JSON.stringify({ message });
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
  });
  res.end(body);
}

/**
 * The local HTTP API: every request becomes a payload-2.0 event for `invoke` (the api function) and its
 * result becomes the response, as API Gateway's HTTP API does, including its own answers: 404 for a path
 * no route matches, 413 above 10 MB, 500 `Internal Server Error` when the function fails, 503 when it
 * times out.
 */
export function createApiGateway(
  invoke: (event: APIGatewayProxyEventV2) => Promise<unknown>,
  log: (line: string) => void,
): Server {
  return createServer((req: IncomingMessage, res: ServerResponse) => {
    const method = (req.method ?? "GET").toUpperCase();
    const url = req.url ?? "/";
    const route = matchRoute(method, splitOnce(url, "?")[0] ?? "/");
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_REQUEST_BYTES) chunks.push(chunk);
    });
    req.on("end", () => {
      if (!route) return gatewayError(res, 404, "Not Found");
      if (size > MAX_REQUEST_BYTES) return gatewayError(res, 413, "Request Entity Too Large");
      const event = toPayloadV2(
        {
          method,
          url,
          rawHeaders: req.rawHeaders,
          sourceIp: req.socket.remoteAddress ?? "127.0.0.1",
          body: Buffer.concat(chunks),
        },
        route,
      );
      invoke(event).then(
        (result) => writeResult(res, result),
        (err: unknown) => {
          const timedOut = err instanceof InvocationError && err.payload.errorType === "Sandbox.Timedout";
          log(`api ${method} ${url} failed: ${err instanceof Error ? err.message : String(err)}`);
          if (timedOut) gatewayError(res, 503, "Service Unavailable");
          else gatewayError(res, 500, "Internal Server Error");
        },
      );
    });
  });
}

function splitOnce(s: string, sep: string): [string, string | undefined] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + 1)];
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
