#!/usr/bin/env node
// `npm run reconcile [-- --dry-run]`: asks Hangar to recompute every project's quota usage from image
// records and storage, prints the report, and (unless --dry-run) repairs drift. Talks to the API as an
// admin: HANGAR_URL + HANGAR_TOKEN, or the local stack's .hangar/local.json (HANGAR_HOME moves it).
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

const dryRun = process.argv.includes("--dry-run");
let url = process.env.HANGAR_URL;
let token = process.env.HANGAR_TOKEN;
if (!url || !token) {
  const home = resolve(process.env.HANGAR_HOME ?? ".hangar");
  try {
    const local = JSON.parse(readFileSync(join(home, "local.json"), "utf8"));
    url ??= local.apiUrl;
    token ??= local.tokens.admin;
  } catch {
    console.error(
      `reconcile: set HANGAR_URL and HANGAR_TOKEN (an admin's), or start the local stack (${home}/local.json)`,
    );
    process.exit(1);
  }
}
const res = await fetch(new URL(`/v2/quotas/reconcile?repair=${!dryRun}`, url), {
  method: "POST",
  headers: { "X-Auth-Token": token },
});
const body = await res.json().catch(() => ({}));
if (!res.ok) {
  console.error(`reconcile: HTTP ${res.status}: ${body?.error?.message ?? JSON.stringify(body)}`);
  process.exit(1);
}
for (const p of body.projects) {
  const drift = Object.entries(p.drift).filter(([, v]) => v !== 0);
  const state = drift.length
    ? `drift ${drift.map(([k, v]) => `${k} ${v > 0 ? "+" : ""}${v}`).join(", ")}${p.repaired ? " (repaired)" : ""}`
    : "exact";
  console.log(
    `${p.project}: ${state}; staged ${p.storage.staged} B, stored ${p.storage.stored} B in storage`,
  );
}
// Storage no live image owns: staged uploads nobody will import, stored bytes and spools with no image.
if (body.orphans.length) console.log(`objects no image owns: ${body.orphans.join(", ")}`);
for (const u of body.orphanUploads ?? []) {
  const owner = u.imageId ? `image ${u.imageId} is ${u.status ?? "gone"}` : "no image";
  console.log(`incomplete upload no image owns: ${u.key} (upload ${u.uploadId}; ${owner})`);
}
for (const m of body.mismatches)
  console.log(`image ${m.imageId}: record says ${m.recordSays} B, storage has ${m.storageHas} B`);
if (process.argv.includes("--json")) console.log(JSON.stringify(body));
