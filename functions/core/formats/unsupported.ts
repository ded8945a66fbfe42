/**
 * Formats QEMU would probe but Hangar does not take. Recognising them matters: an upload left to
 * pass as "raw" while QEMU reads it as something else is the confusion behind CVE-2024-32498.
 */
import { asciiBytes, hasBytesAt } from "./bytes.ts";
import type { UnsupportedFormat } from "./format-module.ts";

export const QED_MAGIC = asciiBytes("QED\0");
export const PARALLELS_MAGICS = [asciiBytes("WithoutFreeSpace"), asciiBytes("WithouFreSpacExt")] as const;
export const BOCHS_MAGIC = asciiBytes("Bochs Virtual HD Image");
export const CLOOP_MAGIC = asciiBytes("#!/bin/sh\n#V2.0 Format\n");

export const UNSUPPORTED_FORMATS: readonly UnsupportedFormat[] = [
  { name: "qed", probe: (head) => hasBytesAt(head, 0, QED_MAGIC) },
  { name: "parallels", probe: (head) => PARALLELS_MAGICS.some((m) => hasBytesAt(head, 0, m)) },
  { name: "bochs", probe: (head) => hasBytesAt(head, 0, BOCHS_MAGIC) },
  { name: "cloop", probe: (head) => hasBytesAt(head, 0, CLOOP_MAGIC) },
];
