import { imageKey, spoolKey } from "./image/image.ts";
import type { ObjectStore } from "./ports.ts";

/** Keys an import writes by multipart upload: the stored image and, for conversions, its spool. */
export const importWriteKeys = (id: string): string[] => [imageKey(id), spoolKey(id)];

/** The image whose import writes `key` (one of `importWriteKeys`), if it is one. */
export function writeKeyOwner(key: string): string | undefined {
  const match = /^(?:images|spool)\/([a-z0-9-]+)$/.exec(key);
  return match?.[1];
}

/**
 * Aborts the multipart uploads in progress at the keys an import of `id` writes: what an importer that
 * died mid-write left behind (its own failure path aborts in-process, a crash cannot). Called before an
 * import writes, when the image is deleted, and by the sweeper. Returns how many it aborted.
 */
export async function abortLeftoverWrites(objects: ObjectStore, id: string): Promise<number> {
  let aborted = 0;
  for (const key of importWriteKeys(id)) aborted += await objects.abortUploads(key);
  return aborted;
}
