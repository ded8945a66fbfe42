/**
 * What the client can tell about a token the API refused. The API's 401 says only whether the token
 * expired or is otherwise not valid (so a caller learns nothing more about tokens from it); the CLI holds
 * the token itself, so it reads the token's own claims, unverified, to say when it expired or what to
 * check.
 */
export function whyRefused(token: string, now: number = Date.now()): string {
  const parts = token.split(".");
  if (parts.length !== 3) {
    return "the token is not a JWT (three dot-separated parts); check that it was copied whole";
  }
  let claims: { exp?: unknown; iss?: unknown };
  try {
    claims = JSON.parse(Buffer.from(parts[1] ?? "", "base64url").toString("utf8")) as typeof claims;
  } catch {
    return "the token is not a readable JWT (its claims are not base64url JSON); check that it was copied whole";
  }
  if (typeof claims.exp === "number" && claims.exp * 1000 <= now) {
    const ago = Math.max(1, Math.round((now - claims.exp * 1000) / 60_000));
    return (
      `the token expired at ${new Date(claims.exp * 1000).toISOString()} (${ago} min ago); get a fresh one ` +
      "(the local stack writes fresh demo tokens to local.json when it starts)"
    );
  }
  const issuer = typeof claims.iss === "string" ? ` (issuer ${claims.iss})` : "";
  return (
    `the token has not expired, so this API does not accept its signature, issuer or audience${issuer}: ` +
    "is it a token of another Hangar (another deployment, or another HANGAR_HOME)?"
  );
}
