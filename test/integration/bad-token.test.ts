import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { exportJWK, generateKeyPair } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { publicJwk, signToken, type TokenClaims } from "../../infra/local/tokens.ts";
import { httpApiEvent, invokeBundle, seen } from "../built-bundle.ts";
import { api, getStack, mintToken, signingKey, stackLog } from "./setup/stack.ts";

/**
 * A bad token gets the same answer from the local stack's API and from the built api bundle invoked
 * as Lambda invokes it behind the HTTP API (payload 2.0, no gateway authorizer): Glance's 401.
 */

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bundle = path.join(root, "dist/api/index.mjs");

beforeAll(async () => {
  // The bundle as `npm run build` (and so `osls package`) makes it.
  await promisify(execFile)(process.execPath, ["scripts/build.mjs", "api"], { cwd: root, timeout: 100_000 });
}, 120_000);

const alice: TokenClaims = { sub: "alice", project_id: "project-alice", roles: ["member"] };

type Refusal = "missing" | "expired" | "invalid";

/** Bad requests, what the caller is told about each, and the cause the server logs (none when no token). */
async function badRequests(): Promise<[string, Record<string, string>, Refusal, string | undefined][]> {
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const good = await mintToken(alice);
  return [
    ["no token", {}, "missing", undefined],
    ["expired", { "x-auth-token": await mintToken(alice, { expiresIn: "-1m" }) }, "expired", "expired"],
    [
      "signed by another key",
      { "x-auth-token": await signToken(await exportJWK(privateKey), alice) },
      "invalid",
      "bad signature",
    ],
    ["tampered signature", { "x-auth-token": `${good.slice(0, -4)}AAAA` }, "invalid", "bad signature"],
    [
      "another issuer",
      { "x-auth-token": await mintToken(alice, { issuer: "https://elsewhere.test/" }) },
      "invalid",
      "wrong issuer",
    ],
    [
      "another audience",
      { authorization: `Bearer ${await mintToken(alice, { audience: "other" })}` },
      "invalid",
      "wrong audience",
    ],
    ["garbage", { "x-auth-token": "not-a-token" }, "invalid", "malformed"],
    ["Basic scheme", { authorization: `Basic ${good}` }, "missing", undefined],
  ];
}

const REFUSED = "The request you have made requires authentication";
const BODIES: Record<Refusal, { message: string; reason: string }> = {
  missing: { message: `${REFUSED}.`, reason: "UNAUTHENTICATED" },
  expired: { message: `${REFUSED}: the token has expired.`, reason: "TOKEN_EXPIRED" },
  invalid: { message: `${REFUSED}: the token is not valid.`, reason: "TOKEN_INVALID" },
};

describe("a bad token, locally and through the built api handler", () => {
  it("gets the same Glance-style 401, body and content type alike", async () => {
    const stack = getStack();
    const requests = await badRequests();
    const paths = ["/v2/images", "/v2/images/00000000-0000-4000-8000-000000000000"];
    const cases = paths.flatMap((p) =>
      requests.map(([what, headers, refusal]) => ({ what, path: p, headers, refusal })),
    );
    const { results } = await invokeBundle(
      bundle,
      {
        AWS_REGION: stack.region,
        AWS_ACCESS_KEY_ID: stack.accessKeyId,
        AWS_SECRET_ACCESS_KEY: stack.secretAccessKey,
        HANGAR_TABLE: stack.table,
        HANGAR_BUCKET: stack.bucket,
        // Unused loopback ports: a 401 never reaches storage.
        HANGAR_S3_ENDPOINT: "http://127.0.0.1:9",
        HANGAR_DYNAMODB_ENDPOINT: "http://127.0.0.1:9",
        HANGAR_JWT_ISSUER: stack.jwtIssuer,
        HANGAR_JWT_AUDIENCE: stack.jwtAudience,
        HANGAR_JWT_PUBLIC_JWK: JSON.stringify(publicJwk(signingKey())),
      },
      cases.map((c) => httpApiEvent({ method: "GET", path: c.path, headers: c.headers })),
    );
    for (const [i, c] of cases.entries()) {
      const response = await api(c.path, { headers: c.headers });
      const local = {
        status: response.status,
        type: response.headers.get("content-type") ?? undefined,
        body: await response.json(),
      };
      expect(local, `${c.what} ${c.path} (local)`).toEqual({
        status: 401,
        type: "application/json",
        body: {
          error: { code: 401, title: "Unauthorized", ...BODIES[c.refusal] },
        },
      });
      expect(seen(results[i]), `${c.what} ${c.path} (Lambda)`).toEqual(local);
    }
  }, 60_000);

  it("logs why each token was refused, and only the caller hears whether it expired or is not valid", async () => {
    for (const [what, headers, , cause] of await badRequests()) {
      const response = await api("/v2/images", { headers });
      expect(response.status, what).toBe(401);
      const requestId = response.headers.get("x-openstack-request-id");
      const refused = (await stackLog())
        .map((l) => l.slice(l.indexOf("{")))
        .filter((l) => l.startsWith("{") && l.includes(requestId ?? "?"))
        .map((l) => JSON.parse(l) as { message: string; cause?: string })
        .find((l) => l.message === "token refused");
      expect(refused?.cause, what).toBe(cause);
    }
  });
});
