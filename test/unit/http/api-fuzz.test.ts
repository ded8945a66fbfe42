import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  answerProblem,
  describeExchange,
  type FuzzContext,
  type FuzzRequest,
  fuzzRequests,
} from "../../fixtures/api-fuzz.ts";
import { testApp } from "./harness.ts";

/**
 * API fuzz over the app with in-memory fakes: random bodies, JSON patches, query strings, path ids and
 * headers. Whatever arrives, the answer is below 500, carries no stack trace, and every 4xx is Glance's error
 * body with a message. `test/integration/api-fuzz.test.ts` runs a smaller share against the real stack.
 */

let h: Awaited<ReturnType<typeof testApp>>;
let ctx: FuzzContext;
const seen = { cases: 0, fivexx: 0 };

beforeAll(async () => {
  h = await testApp();
  const tokens = {
    admin: await h.token("root", "p-admin", ["admin"]),
    member: await h.token("alice", "p-alice", ["member"]),
    reader: await h.token("rita", "p-alice", ["reader"]),
    other: await h.token("bob", "p-bob", ["member"]),
    none: await h.token("nobody", "p-alice", []),
  };
  const ids: string[] = [];
  for (const body of [
    { name: "queued", visibility: "shared" },
    { name: "big", upload_size: 16 * 1024 * 1024 },
    { name: "active", visibility: "community", tags: ["a"] },
  ]) {
    const res = await h.call("POST", "/v2/images", tokens.member, body);
    expect(res.status).toBe(201);
    ids.push(((await res.json()) as { id: string }).id);
  }
  const active = ids[2] as string;
  await h.images.transition(active, "startImport", {});
  await h.images.transition(active, "finishImport", {});
  await h.call("POST", `/v2/images/${ids[0]}/members`, tokens.member, { member: "p-bob" });
  ctx = { ids, tokens };
});

afterAll(() => {
  // The figures the reliability notes quote.
  console.info(`api fuzz (unit): ${seen.cases} requests, ${seen.fivexx} answered 5xx`);
});

/** Sends one request and checks the answer's contract; a Request the URL parser refuses is skipped. */
async function probe(r: FuzzRequest) {
  let req: Request;
  try {
    req = new Request(new URL(r.path, "http://localhost"), {
      method: r.method,
      headers: r.headers,
      ...(r.body !== undefined && r.method !== "GET" && r.method !== "HEAD" ? { body: r.body } : {}),
    });
  } catch {
    return; // not a request a client could send
  }
  seen.cases++;
  const res = await h.app.request(req);
  const text = await res.text();
  if (res.status >= 500) seen.fivexx++;
  const problem = answerProblem(r, res.status, text);
  expect(problem, `${problem}: ${describeExchange(r, res.status, text)}`).toBeUndefined();
}

const RUNS: Record<string, number> = {
  "create bodies": 600,
  "JSON patches": 600,
  "list query strings": 600,
  "path ids and sub-routes, with every method": 800,
  "headers: tokens and content types": 500,
};

describe("the fuzz contract", () => {
  it("flags a 5xx, a stack trace, and a 4xx that is not Glance's body with a message", () => {
    const get = { method: "GET", path: "/v2/images", headers: {} };
    const glance = (code: number, message: string) => JSON.stringify({ error: { code, message } });
    expect(answerProblem(get, 500, glance(500, "generic"))).toMatch(/500/);
    expect(answerProblem(get, 400, `${glance(400, "x")}\n    at parse (/app/functions/x.ts:1:2)`)).toMatch(
      /stack/,
    );
    expect(answerProblem(get, 404, "Not Found")).toMatch(/JSON/);
    expect(answerProblem(get, 400, glance(400, ""))).toMatch(/message/);
    expect(answerProblem(get, 413, glance(400, "x"))).toMatch(/code/);
    expect(answerProblem({ ...get, method: "HEAD" }, 404, "")).toBeUndefined();
    expect(answerProblem(get, 404, glance(404, "No image found"))).toBeUndefined();
  });
});

describe("API fuzz: no input is a 5xx, a stack trace or a 4xx without a message", () => {
  // The families need the context built in beforeAll; their names are known before.
  for (const name of Object.keys(RUNS)) {
    it(name, async () => {
      const family = fuzzRequests(ctx).find((f) => f.name === name);
      if (!family) throw new Error(`no request family ${name}`);
      await fc.assert(fc.asyncProperty(family.requests, probe), { numRuns: RUNS[name] });
    });
  }
});
