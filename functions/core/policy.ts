import type { DiskFormat, HashAlgo } from "./image/format-names.ts";

/** The operator's import policy: what the importer enforces and `/v2/info/import` shows. */
export interface ImportPolicy {
  osHashAlgo: HashAlgo;
  /** Format images are converted to when their own is not accepted. */
  preferredFormat: DiskFormat;
  /** Formats stored as uploaded. */
  acceptedFormats: readonly DiskFormat[];
  /** Largest virtual size accepted, bytes. */
  maxVirtualSize: number;
  /** Largest ratio of decompressed to compressed bytes for gzip-wrapped uploads. */
  maxGzipRatio: number;
}

/**
 * The policy when the operator sets nothing: raw stored, raw and ISO taken as they are, images of up to
 * 1 TiB, gzip expanding at most 64-fold, sha512 as Glance's default `os_hash_algo`. Configuration's
 * defaults and the API's fallback both read these.
 */
export const DEFAULT_IMPORT_POLICY: Readonly<ImportPolicy> = Object.freeze({
  osHashAlgo: "sha512",
  preferredFormat: "raw",
  acceptedFormats: Object.freeze(["raw", "iso"] as const),
  maxVirtualSize: 2 ** 40,
  maxGzipRatio: 64,
});
