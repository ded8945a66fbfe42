import { mkdtempSync, readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AsyncInvoker } from "../../../infra/local/lambda/async-invoker.ts";
import { createInvokeApi } from "../../../infra/local/lambda/invoke-api.ts";

// The local Lambda API address also answers EventBridge's PutEvents (and StartExecution when the stack
// runs the fan-out): AWS's JSON protocol, its error types, its status codes.
const dir = mkdtempSync(join(tmpdir(), "hangar-invoke-api-"));
const file = join(dir, "events.jsonl");
const lines: string[] = [];
// No function is invoked here: the invoker is never reached.
const server = createInvokeApi(new Map(), {} as AsyncInvoker, (l) => lines.push(l), {
  file,
  region: "local-1",
});
let base = "";

beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

async function call(target: string, body: string) {
  const res = await fetch(`${base}/`, {
    method: "POST",
    headers: { "x-amz-target": target, "content-type": "application/x-amz-json-1.1" },
    body,
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe("local AWS JSON calls", () => {
  it("PutEvents stores delivered events and answers their ids", async () => {
    const entry = { Source: "hangar", DetailType: "image.active", Detail: JSON.stringify({ image_id: "x" }) };
    const out = await call("AWSEvents.PutEvents", JSON.stringify({ Entries: [entry] }));
    expect(out.status).toBe(200);
    expect(out.body).toMatchObject({ FailedEntryCount: 0, Entries: [{ EventId: expect.any(String) }] });
    expect(JSON.parse(readFileSync(file, "utf8").trim())).toMatchObject({
      source: "hangar",
      "detail-type": "image.active",
      region: "local-1",
    });
  });

  it("a body that is not JSON, or that the service refuses, is the caller's 400 with AWS's error type", async () => {
    expect(await call("AWSEvents.PutEvents", "{not json")).toEqual({
      status: 400,
      body: expect.objectContaining({ __type: "SerializationException" }),
    });
    expect(await call("AWSEvents.PutEvents", JSON.stringify({ Entries: [] }))).toEqual({
      status: 400,
      body: expect.objectContaining({ __type: "ValidationException" }),
    });
  });

  it("StartExecution is unknown when the stack runs no state machine", async () => {
    expect(await call("AWSStepFunctions.StartExecution", "{}")).toMatchObject({ status: 404 });
  });
});
