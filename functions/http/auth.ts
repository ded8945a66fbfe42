import { createLocalJWKSet, createRemoteJWKSet, errors, type JWTVerifyGetKey, jwtVerify } from "jose";
import * as z from "zod/mini";
import { $ZodError } from "zod/v4/core";
import { UnauthenticatedError } from "../core/errors.ts";
import type { Caller } from "../core/image/access.ts";
import { once } from "../core/once.ts";

// Project ids become storage keys and names in records: at most 255 characters, like every Glance name.
const Claims = once(() =>
  z.object({
    sub: z.string().check(z.minLength(1), z.maxLength(255)),
    project_id: z.string().check(z.minLength(1), z.maxLength(255)),
    roles: z._default(z.array(z.string()), []),
  }),
);

export interface TokenVerifierOptions {
  issuer: string;
  audience: string;
  jwksUrl?: string | undefined;
  publicJwk?: string | undefined;
  /** The keys as a lookup of the caller's, instead of a URL or a JWK (tests count the lookups). */
  keys?: JWTVerifyGetKey | undefined;
}

/**
 * The signing keys could not be fetched (JWKS unreachable, timed out or malformed): an outage on our
 * side, not a bad token, so it is not a HangarError and the API answers a generic 500 and logs why.
 */
export class TokenKeysUnavailableError extends Error {
  override name = "TokenKeysUnavailableError";
}

/**
 * Why a token was refused, for the operator's log: the caller is told only whether it expired or is
 * otherwise not valid, nothing that would help forge one.
 */
export type RefusalCause =
  | "expired"
  | "not yet valid"
  | "bad signature"
  | "unknown signing key"
  | "wrong issuer"
  | "wrong audience"
  | "missing claim"
  | "algorithm not allowed"
  | "malformed";

export function refusalCause(err: unknown): RefusalCause {
  if (err instanceof errors.JWTExpired) return "expired";
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === "iss") return "wrong issuer";
    if (err.claim === "aud") return "wrong audience";
    if (err.claim === "nbf" || err.claim === "iat") return "not yet valid";
    return "missing claim";
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return "bad signature";
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys)
    return "unknown signing key";
  if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported)
    return "algorithm not allowed";
  if (err instanceof $ZodError) return "missing claim";
  return "malformed";
}

const REFUSED = "The request you have made requires authentication";

/** Faults of the key source, not of the token. */
function isKeySourceFault(cause: unknown): boolean {
  if (cause instanceof errors.JWKSTimeout || cause instanceof errors.JWKSInvalid) return true;
  // Anything jose or the claims schema rejected is the token's fault; anything else (fetch failing) is ours.
  return !(cause instanceof errors.JOSEError || cause instanceof $ZodError);
}

/**
 * Verifies Hangar JWTs (signature, issuer, audience, expiry) and returns the caller they name. A bad
 * token throws UnauthenticatedError (401); keys that cannot be fetched throw TokenKeysUnavailableError.
 */
export type TokenVerifier = (token: string) => Promise<Caller>;

/**
 * How long a verified token is taken again without checking its signature (never past its `exp`): a
 * client sends the same token with every request, and the signature check is most of a small request's
 * CPU. A key removed from the JWKS stops tokens signed with it within this time (jose itself keeps a
 * fetched key set up to 10 minutes).
 */
export const VERIFIED_TOKEN_MS = 60_000;
/** Verified tokens kept at most; the oldest makes room. */
const VERIFIED_TOKENS = 1000;

export function createTokenVerifier(
  options: TokenVerifierOptions,
  log?: (message: string, fields: Record<string, unknown>) => void,
  now: () => number = Date.now,
): TokenVerifier {
  let keys: JWTVerifyGetKey;
  if (options.keys) keys = options.keys;
  else if (options.jwksUrl) keys = createRemoteJWKSet(new URL(options.jwksUrl));
  else if (options.publicJwk) keys = createLocalJWKSet({ keys: [JSON.parse(options.publicJwk)] });
  else throw new Error("a JWKS URL or a public JWK is required");
  const verified = new Map<string, { caller: Caller; until: number }>();
  const keep = (token: string, caller: Caller, exp: number) => {
    if (verified.size >= VERIFIED_TOKENS) {
      const oldest = verified.keys().next().value;
      if (oldest !== undefined) verified.delete(oldest);
    }
    verified.set(token, { caller, until: Math.min(now() + VERIFIED_TOKEN_MS, exp * 1000) });
  };
  return async (token) => {
    const hit = verified.get(token);
    if (hit && now() < hit.until) return { ...hit.caller, roles: [...hit.caller.roles] };
    if (hit) verified.delete(token);
    try {
      const { payload } = await jwtVerify(token, keys, {
        issuer: options.issuer,
        audience: options.audience,
        // Asymmetric algorithms only, and every token must expire.
        algorithms: [
          "ES256",
          "ES384",
          "ES512",
          "RS256",
          "RS384",
          "RS512",
          "PS256",
          "PS384",
          "PS512",
          "EdDSA",
        ],
        requiredClaims: ["exp"],
      });
      const claims = Claims().parse(payload);
      const caller = { userId: claims.sub, projectId: claims.project_id, roles: claims.roles };
      // requiredClaims makes `exp` present, and jwtVerify has checked that it is a number.
      keep(token, { ...caller, roles: [...caller.roles] }, payload.exp as number);
      return caller;
    } catch (err) {
      if (isKeySourceFault(err)) {
        const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
        throw new TokenKeysUnavailableError(`cannot fetch the token signing keys (${detail})`, {
          cause: err,
        });
      }
      const cause = refusalCause(err);
      log?.("token refused", { cause, detail: err instanceof Error ? err.message : String(err) });
      throw cause === "expired"
        ? new UnauthenticatedError(`${REFUSED}: the token has expired.`, {
            cause: err,
            reason: "TOKEN_EXPIRED",
          })
        : new UnauthenticatedError(`${REFUSED}: the token is not valid.`, {
            cause: err,
            reason: "TOKEN_INVALID",
          });
    }
  };
}

/** The token from `X-Auth-Token` (what OpenStack clients send) or `Authorization: Bearer`. */
export function tokenFrom(headers: { get(name: string): string | null | undefined }): string | undefined {
  const x = headers.get("x-auth-token")?.trim();
  if (x) return x;
  const m = /^Bearer\s+(.+)$/i.exec(headers.get("authorization")?.trim() ?? "");
  return m?.[1];
}
