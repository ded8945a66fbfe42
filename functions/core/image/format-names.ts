/**
 * The names an image's formats and digests take in the API and in configuration: the one list of each
 * (configuration, the image catalogue and the OpenAPI document read them from here).
 */

/** Disk formats Hangar knows by name (Glance's list, restricted to what it can inspect). */
export const DISK_FORMATS = [
  "raw",
  "qcow2",
  "vmdk",
  "vhd",
  "vhdx",
  "vdi",
  "iso",
  "ami",
  "ari",
  "aki",
] as const;
export type DiskFormat = (typeof DISK_FORMATS)[number];

/** Glance's container formats; Hangar stores the name and never looks inside. */
export const CONTAINER_FORMATS = ["bare", "ovf", "ova", "ami", "ari", "aki", "docker", "compressed"] as const;
export type ContainerFormat = (typeof CONTAINER_FORMATS)[number];

/** The algorithms `os_hash_algo` may name (the operator picks one; Glance's default is sha512). */
export const HASH_ALGOS = ["sha512", "sha384", "sha256"] as const;
export type HashAlgo = (typeof HASH_ALGOS)[number];
