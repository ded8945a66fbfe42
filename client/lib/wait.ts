import { HangarApiError, type HangarClient, type Image } from "./api.ts";
import { humanDuration } from "./units.ts";

/** Statuses an image does not leave by itself. */
export const SETTLED = new Set(["active", "killed", "deactivated", "deleted"]);

export class WaitTimeoutError extends Error {
  override name = "WaitTimeoutError";
}

/** The longest wait between two looks at the image: how late, at most, the client learns it is ready. */
export const MAX_POLL_INTERVAL_MS = 1000;

/**
 * Polls the image until it settles (`active`, `killed`, ...), every `intervalMs` (default 250 ms, growing to
 * 1 s for long imports: a show is one read, and a longer wait is time the user waits after the import is
 * done). A 404 means the image was deleted meanwhile.
 */
export async function waitForImage(
  client: HangarClient,
  id: string,
  options: { timeoutMs?: number | undefined; signal?: AbortSignal | undefined; intervalMs?: number } = {},
): Promise<Image> {
  const deadline = options.timeoutMs ? Date.now() + options.timeoutMs : Number.POSITIVE_INFINITY;
  let interval = options.intervalMs ?? 250;
  for (;;) {
    options.signal?.throwIfAborted();
    let image: Image;
    try {
      image = await client.getImage(id);
    } catch (err) {
      if (err instanceof HangarApiError && err.status === 404) return { id, status: "deleted" };
      throw err;
    }
    if (SETTLED.has(image.status)) return image;
    if (Date.now() > deadline) {
      throw new WaitTimeoutError(
        `image ${id} is still ${image.status} after ${humanDuration(options.timeoutMs ?? 0)}`,
      );
    }
    await new Promise((r) => setTimeout(r, interval));
    interval = Math.min(Math.max(MAX_POLL_INTERVAL_MS, options.intervalMs ?? 0), Math.round(interval * 1.25));
  }
}
