/**
 * `npm run sweep`: one housekeeping pass (functions/core/sweep.ts) against the local stack described by
 * `$HANGAR_HOME/local.json` (default <repo>/.hangar). HANGAR_UPLOAD_ABANDON_AFTER and
 * HANGAR_STALLED_IMPORT_GRACE (seconds) override the ages, e.g. to sweep a test upload at once.
 */
import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadSweeperConfig } from "../functions/config.ts";
import { createSweeperFunction } from "../functions/roots/sweeper.ts";
import { hangarEnv, type LocalInfo } from "../infra/local/stack.ts";
import { loadOrCreateSigningKey } from "../infra/local/tokens.ts";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const home = resolve(process.env.HANGAR_HOME || join(repoRoot, ".hangar"));
const info = JSON.parse(await readFile(join(home, "local.json"), "utf8")) as LocalInfo;
// hangarEnv names the signing key too; the sweeper reads only its own slice of the configuration.
const key = await loadOrCreateSigningKey(join(home, "jwt-key.json"));
process.env.AWS_ACCESS_KEY_ID = info.accessKeyId;
process.env.AWS_SECRET_ACCESS_KEY = info.secretAccessKey;
const config = loadSweeperConfig({ ...process.env, ...hangarEnv(info, key) });
const report = await createSweeperFunction(config).sweep();
process.stdout.write(`${JSON.stringify(report)}\n`);
