import { createHash, type Hash } from "node:crypto";
import { rename, rm } from "node:fs/promises";
import {
  type ConvertSource,
  convertToQcow2,
  convertToRaw,
  type RangeReader,
  type SequentialSource,
  SOURCE_FORMATS,
} from "../../functions/core/convert/index.ts";
import type { HangarClient, Image } from "./api.ts";
import { SparseWriter } from "./sparse.ts";

export class DownloadVerificationError extends Error {
  override name = "DownloadVerificationError";
}

/** Formats `--format` can ask for: those the converter writes. */
export const DOWNLOAD_FORMATS = ["raw", "qcow2"] as const;
export type DownloadFormat = (typeof DOWNLOAD_FORMATS)[number];

export interface DownloadResult {
  image_id: string;
  path: string;
  /** Format of the file written, and of the image as stored. */
  format: string;
  stored_format: string;
  converted: boolean;
  /** Bytes of the stored image read and verified. */
  size: number;
  /** Length of the file written, and the disk space it takes (holes are not counted). */
  file_size: number;
  checksum: string;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  verified: boolean;
}

/** md5 and the image's os_hash_algo over the stored bytes, in order, checked against the image. */
class StoredDigests {
  private readonly md5 = createHash("md5");
  private readonly os: Hash | undefined;
  bytes = 0;

  constructor(private readonly image: Image) {
    this.os = image.os_hash_algo ? createHash(image.os_hash_algo) : undefined;
  }

  update(chunk: Uint8Array): void {
    this.md5.update(chunk);
    this.os?.update(chunk);
    this.bytes += chunk.length;
  }

  /** The digests, once every byte was seen; throws when either differs from the image's. */
  verify(): { checksum: string; osValue: string | null } {
    const checksum = this.md5.digest("hex");
    const osValue = this.os?.digest("hex") ?? null;
    const { image } = this;
    if (image.checksum && checksum !== image.checksum) {
      throw new DownloadVerificationError(
        `md5 ${checksum} of the download differs from the image's ${image.checksum}`,
      );
    }
    if (image.os_hash_value && osValue !== image.os_hash_value) {
      throw new DownloadVerificationError(
        `${image.os_hash_algo} of the download differs from the image's os_hash_value`,
      );
    }
    return { checksum, osValue };
  }
}

/**
 * The stored image's one sequential GET, hashed as it is read. The converter may stop reading early (a
 * qcow2's data ends before its file does); `drain` reads the rest so the digests cover every byte.
 */
class HashedRead implements SequentialSource {
  private readonly it: AsyncIterator<Uint8Array>;

  constructor(
    body: AsyncIterable<Uint8Array>,
    private readonly digests: StoredDigests,
    private readonly onBytes: ((n: number) => void) | undefined,
  ) {
    this.it = body[Symbol.asyncIterator]();
  }

  private async next(): Promise<Uint8Array | undefined> {
    const r = await this.it.next();
    if (r.done) return undefined;
    this.digests.update(r.value);
    this.onBytes?.(r.value.length);
    return r.value;
  }

  /** Ending this iteration early leaves the GET open for `drain`. */
  async *stream(): AsyncGenerator<Uint8Array> {
    for (let c = await this.next(); c !== undefined; c = await this.next()) yield c;
  }

  async drain(): Promise<void> {
    while ((await this.next()) !== undefined) {}
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

async function get(url: string, signal: AbortSignal | undefined, range?: string): Promise<Response> {
  const res = await fetch(url, { ...(signal ? { signal } : {}), ...(range ? { headers: { range } } : {}) });
  const expected = range ? 206 : 200;
  if (res.status !== expected || !res.body) {
    await res.body?.cancel();
    throw new Error(`storage answered ${res.status} to the download${range ? ` (${range})` : ""}`);
  }
  return res;
}

/** Ranged GETs of the presigned download link, for the converter's second reading. */
function rangeReader(url: string, size: number, signal: AbortSignal | undefined): RangeReader {
  return {
    size,
    async read(offset, length, s) {
      const res = await get(url, s ?? signal, `bytes=${offset}-${offset + length - 1}`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (bytes.length !== length)
        throw new Error(`storage sent ${bytes.length} of ${length} bytes at ${offset}`);
      return bytes;
    },
  };
}

/** The converted image's bytes, reading the stored image once in order and by range where needed. */
function converted(
  image: Image,
  to: DownloadFormat,
  source: ConvertSource,
  signal: AbortSignal | undefined,
): AsyncIterable<Uint8Array> {
  const from = SOURCE_FORMATS[image.disk_format ?? ""];
  if (!from)
    throw new Error(`image ${image.id} is stored as ${image.disk_format}, which Hangar cannot convert`);
  const options = signal ? { signal } : {};
  return to === "qcow2" ? convertToQcow2(from, source, options) : convertToRaw(from, source, options);
}

/**
 * Downloads an active image to `path` through the API's presigned redirect, checking md5 and the image's
 * `os_hash_value` over the stored bytes; the file appears only when both match. Raw output is written
 * sparse. With `format` other than the stored one, the project's converter writes that format while the
 * stored bytes stream in (a qcow2 output reads the stored image once in order, then the clusters that
 * hold data again by range). Memory: a few MiB of stream chunks, plus the converter's read windows.
 */
export async function downloadImage(
  client: HangarClient,
  id: string,
  path: string,
  options: { signal?: AbortSignal | undefined; onBytes?: (n: number) => void; format?: DownloadFormat } = {},
): Promise<DownloadResult> {
  const { signal } = options;
  const image = await client.getImage(id);
  const url = await client.downloadUrl(id);
  const stored = image.disk_format ?? "raw";
  const target = options.format ?? stored;
  const convert = target !== stored && !(target === "raw" && SOURCE_FORMATS[stored] === "raw");
  const digests = new StoredDigests(image);
  const read = new HashedRead(
    (await get(url, signal)).body as AsyncIterable<Uint8Array>,
    digests,
    options.onBytes,
  );
  const partial = `${path}.part`;
  const writer = await SparseWriter.create(partial);
  try {
    const output = convert
      ? converted(
          image,
          target as DownloadFormat,
          { sequential: read, range: rangeReader(url, image.size ?? 0, signal) },
          signal,
        )
      : read.stream();
    for await (const chunk of output) await writer.write(chunk);
    await read.drain();
    await writer.finish();
    const { checksum, osValue } = digests.verify();
    await rename(partial, path);
    return {
      image_id: id,
      path,
      format: target,
      stored_format: stored,
      converted: convert,
      size: digests.bytes,
      file_size: writer.size,
      checksum,
      os_hash_algo: image.os_hash_algo ?? null,
      os_hash_value: osValue,
      verified: Boolean(image.checksum || image.os_hash_value),
    };
  } catch (err) {
    await writer.close();
    await rm(partial, { force: true });
    throw err;
  } finally {
    await read.close().catch(() => undefined);
  }
}
