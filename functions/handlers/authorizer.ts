import { Logger } from "@aws-lambda-powertools/logger";
import type {
  APIGatewayRequestAuthorizerEventV2,
  APIGatewaySimpleAuthorizerResult,
  APIGatewaySimpleAuthorizerWithContextResult,
} from "aws-lambda";
import { errors } from "jose";
import { loadJwtConfig } from "../config.ts";
import { createTokenVerifier, type TokenVerifier, tokenFrom } from "../http/auth.ts";

/**
 * API Gateway (HTTP API) Lambda REQUEST authorizer, payload format 2.0 with simple responses.
 * OpenStack clients send the token as `X-Auth-Token`, everyone else as `Authorization: Bearer`; a JWT
 * authorizer reads only one identity source, hence this function (docs/decisions/0001-authorizer.md).
 * It runs the same verification the API function runs again on every request (functions/http/auth.ts).
 */

export type AuthorizerContext = {
  sub: string;
  project_id: string;
  /** Comma-separated: authorizer context values are kept flat so every integration can read them. */
  roles: string;
};

const logger = new Logger({ serviceName: "hangar" });

let verifier: TokenVerifier | undefined;

// Built on first use, once per container: a configuration error then fails the request (500) with the
// variable named in the log, and jose keeps the fetched JWKS between invocations.
function getVerifier(): TokenVerifier {
  verifier ??= createTokenVerifier(loadJwtConfig(process.env).jwt);
  return verifier;
}

/** Faults of the key source (JWKS unreachable or malformed), not of the token. */
function isKeySourceFault(cause: unknown): boolean {
  if (cause instanceof errors.JWKSTimeout || cause instanceof errors.JWKSInvalid) return true;
  // Anything jose or the claims schema rejected is the token's fault; anything else (fetch failing) is ours.
  return !(cause instanceof errors.JOSEError || (cause instanceof Error && cause.name === "ZodError"));
}

/** The signing keys could not be fetched: an outage on our side, not a bad token. */
export class TokenKeysUnavailableError extends Error {
  override name = "TokenKeysUnavailableError";
}

const DENY: APIGatewaySimpleAuthorizerResult = { isAuthorized: false };

export async function handler(
  event: APIGatewayRequestAuthorizerEventV2,
): Promise<
  APIGatewaySimpleAuthorizerResult | APIGatewaySimpleAuthorizerWithContextResult<AuthorizerContext>
> {
  const verify = getVerifier();
  // Payload format 2.0 lower-cases header names; Headers looks them up case-insensitively anyway.
  const token = tokenFrom(new Headers(definedEntries(event.headers)));
  if (!token) {
    logger.info("request denied", { routeKey: event.routeKey, reason: "no token" });
    return DENY;
  }
  try {
    const caller = await verify(token);
    return {
      isAuthorized: true,
      context: { sub: caller.userId, project_id: caller.projectId, roles: caller.roles.join(",") },
    };
  } catch (error) {
    const cause = error instanceof Error ? error.cause : undefined;
    if (isKeySourceFault(cause)) {
      // Denying here would blame the client for our outage; a 500 says what happened.
      logger.error("cannot verify tokens", { routeKey: event.routeKey, error: cause as Error });
      throw new TokenKeysUnavailableError("cannot fetch the token signing keys", { cause });
    }
    // The reason names the failed check (expired, issuer, audience, signature), never the token.
    const reason = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(error);
    logger.info("request denied", { routeKey: event.routeKey, reason });
    return DENY;
  }
}

function definedEntries(headers: Record<string, string | undefined> | undefined): [string, string][] {
  return Object.entries(headers ?? {}).filter((e): e is [string, string] => e[1] !== undefined);
}
