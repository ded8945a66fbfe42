import { FORMAT_NAMES, type FormatName } from "../formats/types.ts";

/**
 * The names an image's formats and digests take in the API and in configuration: the one list of each
 * (configuration, the image catalogue and the OpenAPI document read them from here).
 */

/** Glance's names for raw images of Amazon's kinds (machine, ramdisk, kernel): inspected and stored as raw. */
export const RAW_ALIASES = ["ami", "ari", "aki"] as const;

/** What the inspector detects but a client may not name: an encrypted volume is no image format. */
type NotDiskFormat = "luks";
export type DiskFormat = Exclude<FormatName, NotDiskFormat> | (typeof RAW_ALIASES)[number];

/**
 * Disk formats Hangar knows by name: Glance's list, restricted to what the inspector recognises
 * (`FORMAT_NAMES`), and the raw aliases.
 */
export const DISK_FORMATS: readonly DiskFormat[] = Object.freeze([
  ...FORMAT_NAMES.filter((f): f is Exclude<FormatName, NotDiskFormat> => f !== "luks"),
  ...RAW_ALIASES,
]);

/** Glance's container formats; Hangar stores the name and never looks inside. */
export const CONTAINER_FORMATS = ["bare", "ovf", "ova", "ami", "ari", "aki", "docker", "compressed"] as const;
export type ContainerFormat = (typeof CONTAINER_FORMATS)[number];

/** The algorithms `os_hash_algo` may name (the operator picks one; Glance's default is sha512). */
export const HASH_ALGOS = ["sha512", "sha384", "sha256"] as const;
export type HashAlgo = (typeof HASH_ALGOS)[number];
