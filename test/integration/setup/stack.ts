import { readFile } from "node:fs/promises";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import type { JWK } from "jose";
import { expect, inject } from "vitest";
import { LeanDynamoDBClient } from "../../../functions/adapters/dynamodb/lean-client.ts";
import { freePort } from "../../../infra/local/services.ts";
import type { LocalInfo, StackOptions } from "../../../infra/local/stack.ts";
import { type SignOptions, signToken, type TokenClaims } from "../../../infra/local/tokens.ts";
import type { ProvidedStack } from "./context.ts";
import { assertLoopback } from "./loopback.ts";

export type { TokenClaims } from "../../../infra/local/tokens.ts";
export { assertLoopback } from "./loopback.ts";

function provided(): ProvidedStack {
  const stack = inject("hangarStack");
  if (!stack) throw new Error("no local stack: run integration tests through vitest's integration project");
  assertLoopback(stack.info.apiUrl);
  assertLoopback(stack.info.s3Endpoint);
  assertLoopback(stack.info.dynamodbEndpoint);
  return stack;
}

/** Endpoints, names, credentials and demo tokens (admin, alice, bob) of the run's shared local stack. */
export function getStack(): LocalInfo {
  return provided().info;
}

/** The local signing key (private JWK); prefer `mintToken`. */
export function signingKey(): JWK {
  return provided().signingKey;
}

/** A token the stack accepts, for any identity, e.g. `mintToken({ sub: "rita", project_id: "p", roles: ["reader"] })`. */
export async function mintToken(claims: TokenClaims, opts?: SignOptions): Promise<string> {
  return await signToken(provided().signingKey, claims, opts);
}

/**
 * Fetches `path` (e.g. `/v2/images`) from the stack's API. With `token`, sends it as `X-Auth-Token`
 * like the OpenStack clients do; a string body without a content type is sent as JSON. Redirects are
 * not followed unless `init.redirect` says so, so a test sees the API's own 302 (e.g. `/file`).
 */
export async function api(path: string, init: RequestInit = {}, token?: string): Promise<Response> {
  const url = new URL(path, provided().info.apiUrl);
  assertLoopback(url.href);
  const headers = new Headers(init.headers);
  if (token !== undefined && !headers.has("x-auth-token") && !headers.has("authorization")) {
    headers.set("x-auth-token", token);
  }
  if (typeof init.body === "string" && !headers.has("content-type"))
    headers.set("content-type", "application/json");
  return await fetch(url, { ...init, headers, redirect: init.redirect ?? "manual" });
}

/** An S3 client for the stack's MinIO (path-style, local credentials). */
export function s3Client(): S3Client {
  const info = getStack();
  return new S3Client({
    endpoint: info.s3Endpoint,
    region: info.region,
    forcePathStyle: true,
    credentials: { accessKeyId: info.accessKeyId, secretAccessKey: info.secretAccessKey },
  });
}

/** A DynamoDB client for the stack's DynamoDB Local. */
export function dynamoDbClient(): DynamoDBClient {
  const info = getStack();
  return new DynamoDBClient({
    endpoint: info.dynamodbEndpoint,
    region: info.region,
    credentials: { accessKeyId: info.accessKeyId, secretAccessKey: info.secretAccessKey },
  });
}

/**
 * The functions' DynamoDB client (item calls as signed requests) for the stack's DynamoDB Local: what
 * the repositories are given in the functions.
 */
export function itemClient(): LeanDynamoDBClient {
  const info = getStack();
  return new LeanDynamoDBClient({
    endpoint: info.dynamodbEndpoint,
    region: info.region,
    credentials: { accessKeyId: info.accessKeyId, secretAccessKey: info.secretAccessKey },
  });
}

const TERMINAL = new Set(["active", "killed", "deactivated", "deleted"]);

/**
 * Polls `GET /v2/images/{id}` until the image has `status` (one or any of several) and returns its JSON.
 * Fails at once when the image reaches another terminal status (with its failure reason in the message),
 * and after `timeoutMs` with the last status seen.
 */
export async function waitForStatus(
  id: string,
  status: string | readonly string[],
  token: string,
  timeoutMs = 30_000,
): Promise<Record<string, unknown>> {
  const wanted = new Set(typeof status === "string" ? [status] : status);
  const deadline = Date.now() + timeoutMs;
  let last = "(no answer yet)";
  for (;;) {
    const res = await api(`/v2/images/${encodeURIComponent(id)}`, {}, token);
    const text = await res.text();
    if (res.status === 200) {
      const image = JSON.parse(text) as Record<string, unknown>;
      const current = String(image.status);
      if (wanted.has(current)) return image;
      last = `${current} ${JSON.stringify(image.failure ?? image.failure_reason ?? "")}`;
      if (TERMINAL.has(current)) {
        throw new Error(`image ${id} reached ${last}, not ${[...wanted].join(" or ")}`);
      }
    } else {
      last = `HTTP ${res.status} ${text.slice(0, 200)}`;
    }
    if (Date.now() > deadline) {
      throw new Error(`image ${id} not ${[...wanted].join(" or ")} after ${timeoutMs} ms; last: ${last}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The stack's log so far (storage events received, handled, failed), one line per entry. */
export async function stackLog(): Promise<string[]> {
  try {
    return (await readFile(provided().logFile, "utf8")).split("\n").filter(Boolean);
  } catch {
    return [];
  }
}

/** Waits until a line of the stack's log contains `text`; returns that line. */
export async function waitForLog(text: string, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = (await stackLog()).find((l) => l.includes(text));
    if (line !== undefined) return line;
    if (Date.now() > deadline)
      throw new Error(`no stack log line containing ${JSON.stringify(text)} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Takes the answer to `POST /v2/images` (201 expected), uploads `bytes` to the image's `upload` link
 * as a client would, and returns the image's id and that link.
 */
export async function uploadThroughLink(
  created: Response,
  bytes: Uint8Array,
): Promise<{ id: string; url: string }> {
  expect(created.status, await created.clone().text()).toBe(201);
  const image = (await created.json()) as {
    id: string;
    upload: { url: string; headers: Record<string, string> };
  };
  const put = await fetch(image.upload.url, { method: "PUT", headers: image.upload.headers, body: bytes });
  expect(put.status).toBe(200);
  return { id: image.id, url: image.upload.url };
}

/**
 * Options for a stack of a test's own in `home` (for tests that stop, crash or reconfigure it): free
 * loopback ports, the run's cached binaries and built functions, no timers, `overrides` last.
 */
export async function ownStackOptions(
  home: string,
  overrides: Partial<StackOptions> = {},
): Promise<StackOptions> {
  const { cacheDir, bundlesDir } = inject("hangarStack");
  return {
    home,
    cacheDir,
    bundlesDir,
    apiPort: await freePort(),
    s3Port: await freePort(),
    dynamodbPort: await freePort(),
    reset: false,
    durableEvents: false,
    sweepIntervalMs: 0,
    redriveIntervalMs: 0,
    ...overrides,
  };
}
