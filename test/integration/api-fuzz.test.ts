import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  answerProblem,
  describeExchange,
  type FuzzContext,
  type FuzzRequest,
  fuzzRequests,
} from "../fixtures/api-fuzz.ts";
import { api, getStack, mintToken } from "./setup/stack.ts";

/**
 * The API fuzz against the real stack, a smaller share of the unit run's: what only DynamoDB and MinIO
 * refuse (key and item sizes, map keys, encodings) must be a 4xx too. Each family is bounded in cases and in
 * time; the counts are logged for the reliability notes.
 */

const RUNS_PER_FAMILY = 100;
const TIME_PER_FAMILY_MS = 40_000;

let ctx: FuzzContext;
const seen = { cases: 0, fivexx: 0 };

beforeAll(async () => {
  const project = `fuzz-${randomUUID().slice(0, 8)}`;
  const tokens = {
    admin: getStack().tokens.admin,
    member: await mintToken({ sub: `${project}-m`, project_id: project, roles: ["member"] }),
    reader: await mintToken({ sub: `${project}-r`, project_id: project, roles: ["reader"] }),
    other: await mintToken({ sub: `${project}-o`, project_id: `${project}-other`, roles: ["member"] }),
    none: await mintToken({ sub: `${project}-n`, project_id: project, roles: [] }),
  };
  const ids: string[] = [];
  for (const body of [
    { name: "queued", visibility: "shared" },
    { name: "big", upload_size: 128 * 1024 * 1024 },
  ]) {
    const res = await api("/v2/images", { method: "POST", body: JSON.stringify(body) }, tokens.member);
    expect(res.status).toBe(201);
    ids.push(((await res.json()) as { id: string }).id);
  }
  await api(
    `/v2/images/${ids[0]}/members`,
    { method: "POST", body: JSON.stringify({ member: `${project}-other` }) },
    tokens.member,
  );
  ctx = { ids, tokens };
});

afterAll(() => {
  console.info(`api fuzz (integration): ${seen.cases} requests, ${seen.fivexx} answered 5xx`);
});

async function probe(r: FuzzRequest) {
  let res: Response;
  try {
    res = await api(r.path, {
      method: r.method,
      headers: r.headers,
      ...(r.body !== undefined && r.method !== "GET" && r.method !== "HEAD" ? { body: r.body } : {}),
    });
  } catch (err) {
    // Requests the client library refuses to build never reach the server.
    if (err instanceof TypeError && !/fetch failed/.test(err.message)) return;
    throw err;
  }
  seen.cases++;
  const text = await res.text();
  if (res.status >= 500) seen.fivexx++;
  const problem = answerProblem(r, res.status, text);
  expect(problem, `${problem}: ${describeExchange(r, res.status, text)}`).toBeUndefined();
}

const FAMILIES = [
  "create bodies",
  "JSON patches",
  "list query strings",
  "path ids and sub-routes, with every method",
  "headers: tokens and content types",
];

describe("API fuzz on the local stack: no 5xx, no stack trace, every 4xx with a message", () => {
  for (const name of FAMILIES) {
    it(
      name,
      async () => {
        const family = fuzzRequests(ctx).find((f) => f.name === name);
        if (!family) throw new Error(`no request family ${name}`);
        await fc.assert(fc.asyncProperty(family.requests, probe), {
          numRuns: RUNS_PER_FAMILY,
          interruptAfterTimeLimit: TIME_PER_FAMILY_MS,
          markInterruptAsFailure: false,
        });
      },
      TIME_PER_FAMILY_MS + 60_000,
    );
  }
});
