import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as z from "zod";

/** What identifies "the same upload" across runs: the file as it is now, sent to the same API, named the same. */
export interface FileIdentity {
  path: string;
  size: number;
  mtimeMs: number;
  name: string;
  apiUrl: string;
}

const StateSchema = z.object({
  imageId: z.string(),
  apiUrl: z.string(),
  path: z.string(),
  size: z.number(),
  mtimeMs: z.number(),
  name: z.string(),
  createdAt: z.string(),
});
export type UploadState = z.infer<typeof StateSchema>;

/**
 * The state file of an upload: a digest of its identity, so a changed file never resumes an old image.
 * mtime counts in whole milliseconds, rounded: restoring a time through `utimes` can come back a hair off.
 */
export function stateFile(dir: string, id: FileIdentity): string {
  const key = createHash("sha256")
    .update(JSON.stringify([id.path, id.size, Math.round(id.mtimeMs), id.name, id.apiUrl]))
    .digest("hex")
    .slice(0, 32);
  return join(dir, `${key}.json`);
}

/** The saved state, or undefined when there is none or it does not describe this file any more. */
export async function loadState(dir: string, id: FileIdentity): Promise<UploadState | undefined> {
  try {
    const parsed = StateSchema.safeParse(JSON.parse(await readFile(stateFile(dir, id), "utf8")));
    if (!parsed.success) return undefined;
    const s = parsed.data;
    const same =
      s.path === id.path &&
      s.size === id.size &&
      Math.round(s.mtimeMs) === Math.round(id.mtimeMs) &&
      s.name === id.name &&
      s.apiUrl === id.apiUrl;
    return same ? s : undefined;
  } catch {
    return undefined;
  }
}

/** Written atomically (temporary file, then rename): a crash mid-write leaves the old state or none. */
export async function saveState(dir: string, id: FileIdentity, imageId: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = stateFile(dir, id);
  const state: UploadState = { imageId, ...id, createdAt: new Date().toISOString() };
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, file);
}

export async function clearState(dir: string, id: FileIdentity): Promise<void> {
  await rm(stateFile(dir, id), { force: true });
}

/** Removes every resume file that points at `imageId` (the image was deleted: nothing left to resume). */
export async function forgetImage(dir: string, imageId: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names.filter((n) => n.endsWith(".json"))) {
    const file = join(dir, name);
    let saved: unknown;
    try {
      saved = JSON.parse(await readFile(file, "utf8"));
    } catch {
      continue;
    }
    const parsed = StateSchema.safeParse(saved);
    if (parsed.success && parsed.data.imageId === imageId) await rm(file, { force: true });
  }
}
