import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  DEMO_IDENTITIES,
  loadOrCreateSigningKey,
  publicJwk,
  signToken,
} from "../../../infra/local/tokens.ts";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "hangar-tokens-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("local signing key and tokens", () => {
  it("persists one ES256 key (owner-only) and loads the same key on the next start", async () => {
    const path = join(dir, "jwt-key.json");
    const first = await loadOrCreateSigningKey(path);
    expect(first).toMatchObject({ kty: "EC", crv: "P-256", alg: "ES256" });
    expect((await stat(path)).mode & 0o077).toBe(0);
    expect(await loadOrCreateSigningKey(path)).toEqual(first);
    expect(JSON.parse(await readFile(path, "utf8"))).toEqual(first);
  });

  it("signs tokens the public half verifies, with issuer hangar-local, audience hangar and 30 days", async () => {
    const key = await loadOrCreateSigningKey(join(dir, "k.json"));
    const pub = publicJwk(key);
    expect(pub.d).toBeUndefined();
    const token = await signToken(key, DEMO_IDENTITIES.alice);
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: "ES256", kid: key.kid });
    const { payload } = await jwtVerify(token, createLocalJWKSet({ keys: [pub] }), {
      issuer: "hangar-local",
      audience: "hangar",
    });
    expect(payload).toMatchObject({ sub: "alice", project_id: "project-alice", roles: ["member"] });
    expect((payload.exp ?? 0) - (payload.iat ?? 0)).toBe(30 * 24 * 3600);
  });

  it("mints tokens a verifier must refuse when asked to (expired, other issuer, other key)", async () => {
    const key = await loadOrCreateSigningKey(join(dir, "k.json"));
    const other = await loadOrCreateSigningKey(join(dir, "other.json"));
    const keys = createLocalJWKSet({ keys: [publicJwk(key)] });
    const opts = { issuer: "hangar-local", audience: "hangar" };
    const reader = { sub: "rita", project_id: "project-rita", roles: ["reader"] };
    await expect(jwtVerify(await signToken(key, reader, { expiresIn: "-1h" }), keys, opts)).rejects.toThrow();
    await expect(
      jwtVerify(await signToken(key, reader, { issuer: "elsewhere" }), keys, opts),
    ).rejects.toThrow();
    await expect(jwtVerify(await signToken(other, reader), keys, opts)).rejects.toThrow();
    await expect(jwtVerify(await signToken(key, reader), keys, opts)).resolves.toBeTruthy();
  });
});
