import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { HangarClient } from "./api.ts";

export class DownloadVerificationError extends Error {
  override name = "DownloadVerificationError";
}

export interface DownloadResult {
  image_id: string;
  path: string;
  size: number;
  checksum: string;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  verified: boolean;
}

/**
 * Downloads an active image's bytes to `path` through the API's presigned redirect, checking md5 and the
 * image's `os_hash_value` on the way; the file appears only when both match. Memory: one stream chunk.
 */
export async function downloadImage(
  client: HangarClient,
  id: string,
  path: string,
  options: { signal?: AbortSignal | undefined; onBytes?: (n: number) => void } = {},
): Promise<DownloadResult> {
  const image = await client.getImage(id);
  const url = await client.downloadUrl(id);
  const res = await fetch(url, options.signal ? { signal: options.signal } : {});
  if (!res.ok || !res.body) throw new Error(`storage answered ${res.status} to the download`);
  const md5 = createHash("md5");
  const algo = image.os_hash_algo ?? undefined;
  const osHash = algo ? createHash(algo) : undefined;
  let size = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      md5.update(chunk);
      osHash?.update(chunk);
      size += chunk.length;
      options.onBytes?.(chunk.length);
      cb(null, chunk);
    },
  });
  const partial = `${path}.part`;
  try {
    await pipeline(
      Readable.fromWeb(res.body as import("node:stream/web").ReadableStream),
      tap,
      createWriteStream(partial),
    );
    const checksum = md5.digest("hex");
    const osValue = osHash?.digest("hex") ?? null;
    if (image.checksum && checksum !== image.checksum) {
      throw new DownloadVerificationError(
        `md5 ${checksum} of the download differs from the image's ${image.checksum}`,
      );
    }
    if (image.os_hash_value && osValue !== image.os_hash_value) {
      throw new DownloadVerificationError(`${algo} of the download differs from the image's os_hash_value`);
    }
    await rename(partial, path);
    return {
      image_id: id,
      path,
      size,
      checksum,
      os_hash_algo: algo ?? null,
      os_hash_value: osValue,
      verified: Boolean(image.checksum || image.os_hash_value),
    };
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  }
}
