import { createLocalJWKSet, exportJWK, generateKeyPair, type JWTVerifyGetKey, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { UnauthenticatedError } from "../../../functions/core/errors.ts";
import { createTokenVerifier, VERIFIED_TOKEN_MS } from "../../../functions/http/auth.ts";

let privateKey: Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];
let localKeys: JWTVerifyGetKey;

beforeAll(async () => {
  const pair = await generateKeyPair("ES256", { extractable: true });
  privateKey = pair.privateKey;
  localKeys = createLocalJWKSet({ keys: [await exportJWK(pair.publicKey)] });
});

/** The key set, counting how often a signature is checked (jose looks the key up for every check). */
function countedKeys() {
  const counter = { checks: 0 };
  const keys: JWTVerifyGetKey = (header, token) => {
    counter.checks++;
    return localKeys(header, token);
  };
  return { counter, keys };
}

const sign = (exp: number | string, audience = "hangar") =>
  new SignJWT({ project_id: "p", roles: ["member"] })
    .setProtectedHeader({ alg: "ES256" })
    .setSubject("u")
    .setIssuer("test")
    .setAudience(audience)
    .setExpirationTime(exp)
    .sign(privateKey);

describe("verified tokens kept by the verifier", () => {
  it("a verified token is taken again without its signature checked, and never after it expires", async () => {
    const { counter, keys } = countedKeys();
    const verify = createTokenVerifier({ issuer: "test", audience: "hangar", keys });
    const exp = Math.floor(Date.now() / 1000) + 2;
    const token = await sign(exp);
    const first = await verify(token);
    (first.roles as string[]).push("admin");
    // The copy kept is not the one handed out: a caller changed by its user changes nothing here.
    expect(await verify(token)).toEqual({ userId: "u", projectId: "p", roles: ["member"] });
    expect(await verify(token)).toEqual({ userId: "u", projectId: "p", roles: ["member"] });
    expect(counter.checks).toBe(1);
    await new Promise((r) => setTimeout(r, exp * 1000 - Date.now() + 50));
    const refused = await verify(token).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(UnauthenticatedError);
    expect((refused as UnauthenticatedError).reason).toBe("TOKEN_EXPIRED");
  });

  it("the signature is checked again once the kept copy is older than VERIFIED_TOKEN_MS", async () => {
    let now = Date.now();
    const { counter, keys } = countedKeys();
    const verify = createTokenVerifier({ issuer: "test", audience: "hangar", keys }, undefined, () => now);
    const token = await sign("1h");
    await verify(token);
    now += VERIFIED_TOKEN_MS - 1;
    await verify(token);
    expect(counter.checks).toBe(1);
    // A token whose signature was changed is another string, never the kept one: it is checked, and refused.
    const forged = `${token.slice(0, -4)}${token.endsWith("AAAA") ? "BBBB" : "AAAA"}`;
    await expect(verify(forged)).rejects.toBeInstanceOf(UnauthenticatedError);
    now += 2;
    expect((await verify(token)).projectId).toBe("p");
    expect(counter.checks).toBe(3);
  });

  it("a refused token is checked and refused every time", async () => {
    const { counter, keys } = countedKeys();
    const verify = createTokenVerifier({ issuer: "test", audience: "hangar", keys });
    const wrongAudience = await sign("1h", "other");
    for (let i = 0; i < 2; i++)
      await expect(verify(wrongAudience)).rejects.toBeInstanceOf(UnauthenticatedError);
    expect(counter.checks).toBe(2);
  });
});
