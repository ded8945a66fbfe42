/**
 * ISO 9660: the primary volume descriptor sits in logical sector 16 (offset 32768), with the
 * standard identifier "CD001" one byte in. QEMU has no ISO driver and reads an ISO as raw, so the
 * virtual size is the stream length, as `qemu-img info` reports it.
 */

import { asciiBytes, hasBytesAt } from "./bytes.ts";
import type { StreamLayer } from "./capture.ts";
import type { FormatModule, FormatReport, FormatSession } from "./format-module.ts";
import { detectPartitionTable, rawVirtualSize } from "./raw.ts";

export const ISO_SECTOR = 2048;
export const ISO_FIRST_DESCRIPTOR_OFFSET = 16 * ISO_SECTOR;
export const ISO_STANDARD_IDENTIFIER = asciiBytes("CD001");
/** "CD001" follows the one-byte descriptor type: offset 32769. */
export const ISO_IDENTIFIER_OFFSET = ISO_FIRST_DESCRIPTOR_OFFSET + 1;

class IsoSession implements FormatSession {
  constructor(private readonly layer: StreamLayer) {}
  advance(): void {}
  report(): FormatReport {
    const partitionTable = detectPartitionTable(this.layer.head());
    return {
      virtualSize: rawVirtualSize(this.layer.position),
      ...(partitionTable === undefined ? {} : { partitionTable }),
      checks: [],
    };
  }
}

/** ISO 9660 format module. */
export const isoFormat: FormatModule = {
  name: "iso",
  probe: (head) => hasBytesAt(head, ISO_IDENTIFIER_OFFSET, ISO_STANDARD_IDENTIFIER),
  open: (layer) => new IsoSession(layer),
};
