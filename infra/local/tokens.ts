import { readFile, rename, writeFile } from "node:fs/promises";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";

export const LOCAL_JWT_ISSUER = "hangar-local";
export const LOCAL_JWT_AUDIENCE = "hangar";

/** The identity a Hangar token carries: subject, project and roles (`admin`, `member`, `reader`). */
export interface TokenClaims {
  sub: string;
  project_id: string;
  roles: string[];
  /** Extra claims, e.g. to test how the API treats unexpected ones. */
  [claim: string]: unknown;
}

export interface SignOptions {
  issuer?: string;
  audience?: string;
  /** A jose time span ("30d", "1h") or an absolute epoch-seconds expiry; negative spans make expired tokens. */
  expiresIn?: string | number;
}

/** Signs an ES256 JWT with the local key; defaults give a token the local stack accepts for 30 days. */
export async function signToken(
  privateJwk: JWK,
  claims: TokenClaims,
  opts: SignOptions = {},
): Promise<string> {
  const key = await importJWK(privateJwk, "ES256");
  const { sub, ...rest } = claims;
  return await new SignJWT(rest)
    .setProtectedHeader({ alg: "ES256", typ: "JWT", ...(privateJwk.kid ? { kid: privateJwk.kid } : {}) })
    .setSubject(sub)
    .setIssuer(opts.issuer ?? LOCAL_JWT_ISSUER)
    .setAudience(opts.audience ?? LOCAL_JWT_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(opts.expiresIn ?? "30d")
    .sign(key);
}

/** The public half of a private JWK (drops `d`), as the API's verifier needs it. */
export function publicJwk(privateJwk: JWK): JWK {
  const { d: _d, ...pub } = privateJwk;
  return pub;
}

/**
 * Loads the local ES256 signing key from `path`, creating and persisting it on first use, so tokens
 * minted by one run stay valid in the next.
 */
export async function loadOrCreateSigningKey(path: string): Promise<JWK> {
  try {
    const jwk = JSON.parse(await readFile(path, "utf8")) as JWK;
    if (jwk.kty === "EC" && jwk.crv === "P-256" && typeof jwk.d === "string") return jwk;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT" && !(err instanceof SyntaxError)) throw err;
  }
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = await exportJWK(privateKey);
  const full: JWK = { ...jwk, alg: "ES256", use: "sig", kid: await calculateJwkThumbprint(jwk) };
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(full, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, path);
  return full;
}

/** The three demo identities the local stack hands out in local.json. */
export const DEMO_IDENTITIES: Readonly<Record<"admin" | "alice" | "bob", TokenClaims>> = {
  admin: { sub: "admin", project_id: "project-admin", roles: ["admin", "member"] },
  alice: { sub: "alice", project_id: "project-alice", roles: ["member"] },
  bob: { sub: "bob", project_id: "project-bob", roles: ["member"] },
};
