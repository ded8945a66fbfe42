import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTokenVerifier } from "../../functions/http/auth.ts";
import { lazyRemoteKeys } from "../../functions/roots/api.ts";

// The api's key set from HANGAR_JWT_JWKS_URL, made on the first verification, against a loopback JWKS.
let server: Server;
let jwksUrl: string;
let fetches = 0;
let privateKey: Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];

beforeAll(async () => {
  const pair = await generateKeyPair("ES256");
  privateKey = pair.privateKey;
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: "k1" }] });
  server = createServer((_req, res) => {
    fetches++;
    res.writeHead(200, { "content-type": "application/json" }).end(jwks);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const sign = () =>
  new SignJWT({ project_id: "p", roles: ["member"] })
    .setProtectedHeader({ alg: "ES256", kid: "k1" })
    .setSubject("u")
    .setIssuer("test")
    .setAudience("hangar")
    .setExpirationTime("1h")
    .sign(privateKey);

describe("the api's remote key set", () => {
  it("fetches the JWKS on the first verification, not when made, and keeps it", async () => {
    fetches = 0;
    const verify = createTokenVerifier({ issuer: "test", audience: "hangar", keys: lazyRemoteKeys(jwksUrl) });
    expect(fetches).toBe(0);
    expect(await verify(await sign())).toEqual({ userId: "u", projectId: "p", roles: ["member"] });
    expect(await verify(await sign())).toEqual({ userId: "u", projectId: "p", roles: ["member"] });
    expect(fetches).toBe(1);
  });

  it("refuses a URL that is not one when made, as the function's init did", () => {
    expect(() => lazyRemoteKeys("not a url")).toThrow(TypeError);
  });
});
