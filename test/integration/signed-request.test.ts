import { afterAll, describe, expect, it } from "vitest";
import { AwsRequestError, SignedJsonClient } from "../../functions/adapters/aws/signed-request.ts";
import { useAwsKeys } from "../aws-keys.ts";
import { closeServices, scriptedService } from "./setup/scripted-service.ts";

// A service on loopback that answers as each test says: how the client treats silence and refusals.
const restoreKeys = useAwsKeys("AKIDLOCAL", "local-secret");
afterAll(async () => {
  restoreKeys();
  await closeServices();
});

const service = scriptedService;

const client = (endpoint: string, timeoutMs = 5000) =>
  new SignedJsonClient({ service: "events", region: "us-east-1", endpoint, timeoutMs, describe: "Test" });

describe("SignedJsonClient", () => {
  it("a service that does not answer in time is asked again, then the call fails with a TimeoutError", async () => {
    const silent = await service((_req, res) => {
      // Never answers; the socket is closed when the client gives up.
      res.on("close", () => undefined);
    });
    const started = Date.now();
    const err = await client(silent.endpoint, 200)
      .post("/", {}, "{}", [200])
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ name: "TimeoutError" });
    expect(silent.requests()).toBe(3);
    expect(Date.now() - started).toBeGreaterThanOrEqual(600);
  });

  it("a refusal carries the service's body; `retry` names the refusals worth another attempt", async () => {
    const body = JSON.stringify({ __type: "ns#SlowDown", message: "later", Extra: [1] });
    const busy = await service((_req, res, n) => {
      if (n <= 2) res.writeHead(400, { "content-type": "application/json" }).end(body);
      else res.writeHead(200).end("{}");
    });
    const refused = await client(busy.endpoint)
      .post("/", {}, "{}", [200])
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(AwsRequestError);
    expect(refused).toMatchObject({
      status: 400,
      type: "SlowDown",
      body,
      message: "Test answered 400 SlowDown: later",
    });
    const retried = await client(busy.endpoint).post("/", {}, "{}", [200], (e) => e.type === "SlowDown");
    expect(retried.status).toBe(200);
    // The first call's refusal; the second call's refusal, tried again, and its answer.
    expect(busy.requests()).toBe(3);
  });
});
