/**
 * Formats QEMU would probe but Hangar does not take, and compressors other than gzip. Recognising them matters: an upload left to
 * pass as "raw" while QEMU reads it as something else is the confusion behind CVE-2024-32498.
 */
import { asciiBytes, hasBytesAt } from "./bytes.ts";
import type { UnsupportedFormat } from "./format-module.ts";

export const QED_MAGIC = asciiBytes("QED\0");
export const PARALLELS_MAGICS = [asciiBytes("WithoutFreeSpace"), asciiBytes("WithouFreSpacExt")] as const;
export const BOCHS_MAGIC = asciiBytes("Bochs Virtual HD Image");
export const CLOOP_MAGIC = asciiBytes("#!/bin/sh\n#V2.0 Format\n");
/** Compressors Hangar does not unwrap: refused by name rather than stored as a meaningless raw disk. */
export const XZ_MAGIC = Uint8Array.of(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00);
export const ZSTD_MAGIC = Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd);
export const BZIP2_MAGIC = asciiBytes("BZh");

export const UNSUPPORTED_FORMATS: readonly UnsupportedFormat[] = [
  { name: "qed", probe: (head) => hasBytesAt(head, 0, QED_MAGIC) },
  { name: "parallels", probe: (head) => PARALLELS_MAGICS.some((m) => hasBytesAt(head, 0, m)) },
  { name: "bochs", probe: (head) => hasBytesAt(head, 0, BOCHS_MAGIC) },
  { name: "cloop", probe: (head) => hasBytesAt(head, 0, CLOOP_MAGIC) },
  { name: "xz", probe: (head) => hasBytesAt(head, 0, XZ_MAGIC) },
  { name: "zstd", probe: (head) => hasBytesAt(head, 0, ZSTD_MAGIC) },
  {
    name: "bzip2",
    // "BZh" then the block size digit 1-9, then the first block's magic (pi in BCD) or end of stream.
    probe: (head) =>
      hasBytesAt(head, 0, BZIP2_MAGIC) &&
      (head[3] ?? 0) >= 0x31 &&
      (head[3] ?? 0) <= 0x39 &&
      (hasBytesAt(head, 4, Uint8Array.of(0x31, 0x41, 0x59, 0x26, 0x53, 0x59)) ||
        hasBytesAt(head, 4, Uint8Array.of(0x17, 0x72, 0x45, 0x38, 0x50, 0x90))),
  },
];
