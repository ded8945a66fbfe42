/**
 * `npm run sweep`: one housekeeping pass (functions/core/sweep.ts) against the local stack described by
 * `$HANGAR_HOME/local.json` (default <repo>/.hangar). HANGAR_UPLOAD_ABANDON_AFTER and
 * HANGAR_STALLED_IMPORT_GRACE (seconds) override the ages, e.g. to sweep a test upload at once.
 */
import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadConfig } from "../functions/config.ts";
import { createHangar } from "../functions/wiring.ts";
import type { LocalInfo } from "../infra/local/stack.ts";
import { loadOrCreateSigningKey, publicJwk } from "../infra/local/tokens.ts";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const home = resolve(process.env.HANGAR_HOME || join(repoRoot, ".hangar"));
const info = JSON.parse(await readFile(join(home, "local.json"), "utf8")) as LocalInfo;
// The sweep verifies no token, but the configuration wants the stack's key all the same.
const key = await loadOrCreateSigningKey(join(home, "jwt-key.json"));
process.env.AWS_ACCESS_KEY_ID = info.accessKeyId;
process.env.AWS_SECRET_ACCESS_KEY = info.secretAccessKey;
const config = loadConfig({
  ...process.env,
  HANGAR_TABLE: info.table,
  HANGAR_BUCKET: info.bucket,
  AWS_REGION: info.region,
  HANGAR_S3_ENDPOINT: info.s3Endpoint,
  HANGAR_DYNAMODB_ENDPOINT: info.dynamodbEndpoint,
  HANGAR_JWT_ISSUER: info.jwtIssuer,
  HANGAR_JWT_AUDIENCE: info.jwtAudience,
  HANGAR_JWT_PUBLIC_JWK: JSON.stringify(publicJwk(key)),
});
const report = await createHangar(config).sweep();
process.stdout.write(`${JSON.stringify(report)}\n`);
