/**
 * The caller's token: taken from the URL fragment (`/ui/#token=<jwt>`, which browsers never send to the
 * server) or pasted, kept in this tab's sessionStorage only, and dropped from the address bar at once.
 */
const KEY = "hangar.token";

export interface Identity {
  user: string;
  project: string;
  roles: string[];
  /** Seconds since the epoch, when the token says. */
  expires?: number;
}

/** Moves a `#token=` fragment into sessionStorage and removes it from the address bar and history entry. */
export function takeTokenFromFragment(loc: Location = location): void {
  const params = new URLSearchParams(loc.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (!token) return;
  sessionStorage.setItem(KEY, token.trim());
  history.replaceState(null, "", `${loc.pathname}${loc.search}`);
}

export function storedToken(): string | undefined {
  return sessionStorage.getItem(KEY) ?? undefined;
}

export function storeToken(token: string): void {
  sessionStorage.setItem(KEY, token.trim());
}

export function forgetToken(): void {
  sessionStorage.removeItem(KEY);
}

function base64UrlDecode(part: string): string {
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/**
 * Whose token it is, read from its claims for display only: the API verifies the signature on every
 * request, the page never trusts these claims for anything else. Undefined for a token that is not a JWT.
 */
export function identityOf(token: string): Identity | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const claims = JSON.parse(base64UrlDecode(payload)) as Record<string, unknown>;
    if (typeof claims.project_id !== "string") return undefined;
    return {
      user: typeof claims.sub === "string" ? claims.sub : "(unknown user)",
      project: claims.project_id,
      roles: Array.isArray(claims.roles)
        ? claims.roles.filter((r): r is string => typeof r === "string")
        : [],
      ...(typeof claims.exp === "number" ? { expires: claims.exp } : {}),
    };
  } catch {
    return undefined;
  }
}
