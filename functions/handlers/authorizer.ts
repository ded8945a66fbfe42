import { Logger } from "@aws-lambda-powertools/logger";
import type {
  APIGatewayRequestAuthorizerEventV2,
  APIGatewaySimpleAuthorizerResult,
  APIGatewaySimpleAuthorizerWithContextResult,
} from "aws-lambda";
import { createLocalJWKSet, createRemoteJWKSet, errors, type JWTVerifyGetKey, jwtVerify } from "jose";
import { z } from "zod";
import { loadConfig } from "../config.ts";

/**
 * API Gateway (HTTP API) Lambda REQUEST authorizer, payload format 2.0 with simple responses.
 * OpenStack clients send the token as `X-Auth-Token`, everyone else as `Authorization: Bearer`;
 * a JWT authorizer reads only one identity source, hence this function (docs/decisions/0001-authorizer.md).
 *
 * The API function verifies the token again with the same issuer, audience and keys; this check keeps
 * unauthenticated traffic from reaching it at all.
 * TODO(dedup): once functions/http/auth.ts exposes `verifyToken`, call it instead of `verify` below.
 */

export type AuthorizerContext = {
  sub: string;
  project_id: string;
  /** Comma-separated: authorizer context values are kept flat so every integration can read them. */
  roles: string;
};

// Only asymmetric algorithms: the keys come from a JWKS and no shared secret exists.
const ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

const ClaimsSchema = z.object({
  sub: z.string().min(1),
  project_id: z.string().min(1),
  roles: z.array(z.string().min(1)).default([]),
});

const logger = new Logger({ serviceName: "hangar", logLevel: "INFO" });

type Verifier = { issuer: string; audience: string; keys: JWTVerifyGetKey };
let verifier: Verifier | undefined;

// Read once per container; the remote JWKS is cached by jose between invocations.
function getVerifier(): Verifier {
  if (!verifier) {
    const { jwt } = loadConfig(process.env);
    const keys = jwt.jwksUrl
      ? createRemoteJWKSet(new URL(jwt.jwksUrl), { timeoutDuration: 3000, cooldownDuration: 30_000 })
      : createLocalJWKSet({ keys: [JSON.parse(jwt.publicJwk ?? "null")] });
    verifier = { issuer: jwt.issuer, audience: jwt.audience, keys };
  }
  return verifier;
}

class TokenError extends Error {
  override name = "TokenError";
}

/** The bearer token from `X-Auth-Token` or `Authorization: Bearer`; both present must agree. */
export function extractToken(headers: Record<string, string | undefined> | undefined): string {
  // Payload format 2.0 lower-cases header names.
  const xAuth = headers?.["x-auth-token"]?.trim() || undefined;
  const authorization = headers?.authorization?.trim();
  let bearer: string | undefined;
  if (authorization) {
    const match = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (!match?.[1]) throw new TokenError("Authorization header is not a Bearer token");
    bearer = match[1];
  }
  if (xAuth && bearer && xAuth !== bearer) {
    throw new TokenError("X-Auth-Token and Authorization carry different tokens");
  }
  const token = xAuth ?? bearer;
  if (!token) throw new TokenError("no token in X-Auth-Token or Authorization");
  return token;
}

async function verify(token: string, v: Verifier): Promise<AuthorizerContext> {
  const { payload } = await jwtVerify(token, v.keys, {
    issuer: v.issuer,
    audience: v.audience,
    algorithms: ALGORITHMS,
    clockTolerance: 5,
  });
  const claims = ClaimsSchema.safeParse(payload);
  if (!claims.success) throw new TokenError("token lacks sub, project_id or a roles list");
  return { sub: claims.data.sub, project_id: claims.data.project_id, roles: claims.data.roles.join(",") };
}

const DENY: APIGatewaySimpleAuthorizerResult = { isAuthorized: false };

/** Faults of the key source, not of the token: they surface as errors (500), not as denials. */
function isKeySourceFault(error: unknown): boolean {
  if (error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid) return true;
  return !(error instanceof errors.JOSEError || error instanceof TokenError);
}

export async function handler(
  event: APIGatewayRequestAuthorizerEventV2,
): Promise<
  APIGatewaySimpleAuthorizerResult | APIGatewaySimpleAuthorizerWithContextResult<AuthorizerContext>
> {
  // A configuration error throws here: API Gateway answers 500 and the runtime logs it.
  const v = getVerifier();
  try {
    const context = await verify(extractToken(event.headers), v);
    return { isAuthorized: true, context };
  } catch (error) {
    if (isKeySourceFault(error)) {
      logger.error("cannot verify tokens", { routeKey: event.routeKey, error: error as Error });
      throw error;
    }
    // Reasons name the failed check (no token, expired, wrong issuer, bad signature), never the token.
    const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    logger.info("request denied", { routeKey: event.routeKey, reason });
    return DENY;
  }
}
