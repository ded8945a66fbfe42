import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import * as z from "zod";

/** Identities whose demo tokens the local stack writes to `local.json`. */
export const IDENTITIES = ["admin", "alice", "bob"] as const;
export type Identity = (typeof IDENTITIES)[number];

const LocalJson = z.object({
  apiUrl: z.string().url(),
  tokens: z.object({ admin: z.string(), alice: z.string(), bob: z.string() }).partial().optional(),
});

export interface ClientConfig {
  apiUrl: string;
  token: string;
  /** Where resume state lives: `<home>/uploads/`. */
  stateDir: string;
}

export class ClientConfigError extends Error {
  override name = "ClientConfigError";
}

/** The folder of `local.json`: HANGAR_HOME, else `./.hangar` (where `npm start` writes it). */
export function hangarHome(env: NodeJS.ProcessEnv, cwd: string): string {
  return env.HANGAR_HOME ? resolve(cwd, env.HANGAR_HOME) : join(cwd, ".hangar");
}

/** Resume state: next to `local.json` when HANGAR_HOME is set, else in the user's `~/.hangar/uploads`. */
export function stateDirFor(env: NodeJS.ProcessEnv, cwd: string): string {
  return env.HANGAR_HOME ? join(hangarHome(env, cwd), "uploads") : join(homedir(), ".hangar", "uploads");
}

/** `http://host:9292/v2/` and `http://host:9292` name the same API. */
export function normalizeApiUrl(url: string): string {
  return url.replace(/\/+$/, "").replace(/\/v2$/, "");
}

/**
 * Where to talk and as whom. Precedence: `--url`/`--token`, then HANGAR_URL/HANGAR_TOKEN, then
 * OS_IMAGE_URL/OS_AUTH_TOKEN, then `local.json` (token of `--as`, default alice). `--as` always picks from
 * `local.json`, over any token in the environment.
 */
export function resolveConfig(
  flags: { url?: string | undefined; token?: string | undefined; as?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
): ClientConfig {
  if (flags.as !== undefined && !(IDENTITIES as readonly string[]).includes(flags.as)) {
    throw new ClientConfigError(`--as takes one of ${IDENTITIES.join(", ")}, not '${flags.as}'`);
  }
  const home = hangarHome(env, cwd);
  const file = join(home, "local.json");
  let local: z.infer<typeof LocalJson> | undefined;
  let localProblem: string | undefined;
  try {
    const parsed = LocalJson.safeParse(JSON.parse(readFileSync(file, "utf8")));
    if (parsed.success) local = parsed.data;
    else localProblem = `${file} is not a Hangar local.json`;
  } catch (err) {
    localProblem =
      (err as NodeJS.ErrnoException).code === "ENOENT" ? `no ${file}` : `cannot read ${file}: ${String(err)}`;
  }
  const apiUrl = flags.url ?? env.HANGAR_URL ?? env.OS_IMAGE_URL ?? local?.apiUrl;
  const identity = (flags.as ?? "alice") as Identity;
  const token =
    flags.token ??
    (flags.as !== undefined ? local?.tokens?.[identity] : undefined) ??
    env.HANGAR_TOKEN ??
    env.OS_AUTH_TOKEN ??
    local?.tokens?.[identity];
  if (!apiUrl) {
    throw new ClientConfigError(
      `no API URL: pass --url, set HANGAR_URL (or OS_IMAGE_URL), or start the local stack (${localProblem})`,
    );
  }
  if (!token) {
    throw new ClientConfigError(
      `no token: pass --token, set HANGAR_TOKEN (or OS_AUTH_TOKEN), or use the local stack's tokens (${localProblem ?? `no '${identity}' token in ${file}`})`,
    );
  }
  return { apiUrl: normalizeApiUrl(apiUrl), token, stateDir: stateDirFor(env, cwd) };
}
