import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { loadConfig } from "../../functions/config.ts";
import {
  createInProcessHangar as createHangar,
  type InProcessHangar as Hangar,
} from "../../infra/local/in-process.ts";
import { LOCAL_EVENT_BUS } from "../../infra/local/lambda/index.ts";
import { hangarEnv } from "../../infra/local/stack.ts";
import { assertLoopback, getStack, signingKey } from "./setup/stack.ts";

/** Small plans for tests: parts of 5 MiB (S3's minimum) above 1 MiB. */
export const TEST_PART_SIZE = 5 * 1024 * 1024;
export const TEST_THRESHOLD = 1024 * 1024;

export interface TestApi {
  hangar: Hangar;
  url: string;
  close(): Promise<void>;
}

/**
 * A second Hangar API on loopback over the shared stack's MinIO and DynamoDB Local, configured with a low
 * multipart threshold (so small files get plans) and `env` overrides. The stack's own event receiver still
 * runs the importer when storage announces an upload, with the same code.
 */
export async function startTestApi(env: Record<string, string> = {}): Promise<TestApi> {
  const info = getStack();
  // The wiring's SDK clients find the local credentials in the default chain.
  process.env.AWS_ACCESS_KEY_ID = info.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = info.secretAccessKey;
  const config = loadConfig({
    ...hangarEnv(info, signingKey()),
    HANGAR_MULTIPART_THRESHOLD: String(TEST_THRESHOLD),
    HANGAR_MULTIPART_PART_SIZE: String(TEST_PART_SIZE),
    // Lifecycle events go to the stack's events.jsonl, as the stack's own api function sends them.
    HANGAR_EVENT_BUS: LOCAL_EVENT_BUS,
    HANGAR_EVENTS_ENDPOINT: info.lambdaEndpoint,
    ...env,
  });
  const hangar = createHangar(config, { log: { info() {}, warn() {}, error() {} } });
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: (req) => hangar.app.fetch(req), port: 0, hostname: "127.0.0.1" }, () =>
      resolve(s as Server),
    ) as Server;
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  assertLoopback(url);
  return {
    hangar,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Fetches `path` from the test API as `token` (JSON bodies get their content type). */
export async function testApi(
  base: string,
  path: string,
  init: RequestInit = {},
  token?: string,
): Promise<Response> {
  const headers = new Headers(init.headers);
  if (token !== undefined) headers.set("x-auth-token", token);
  if (typeof init.body === "string" && !headers.has("content-type"))
    headers.set("content-type", "application/json");
  return fetch(`${base}${path}`, { ...init, headers, redirect: "manual" });
}
