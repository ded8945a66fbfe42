/**
 * LUKS encrypted volumes. LUKS1 (big-endian phdr, payload offset in sectors) is what QEMU's "luks"
 * driver reads, and its virtual size is the payload after the header. QEMU 7.2 does not recognise
 * LUKS2 and reads it as raw, so for LUKS2 the virtual size is the whole stream, as `qemu-img info`
 * reports it. Spec: "LUKS On-Disk Format Specification" 1.2.3 and LUKS2.
 */

import { asciiBytes, FieldReader, hasBytesAt, SECTOR } from "./bytes.ts";
import type { StreamLayer } from "./capture.ts";
import { CHECK, check } from "./checks.ts";
import { MalformedImageError } from "./errors.ts";
import type { FormatModule, FormatReport, FormatSession } from "./format-module.ts";
import { rawVirtualSize } from "./raw.ts";

export const LUKS_MAGIC = asciiBytes("LUKS\xba\xbe");
export const LUKS1_OFFSET = {
  version: 6,
  payloadOffset: 104,
  keyBytes: 108,
  keySlots: 208,
} as const;
export const LUKS1_KEY_SLOT_SIZE = 48;
/** Fields within one key slot. */
export const LUKS1_KEY_SLOT_OFFSET = { active: 0, materialOffset: 40, stripes: 44 } as const;
export const LUKS1_KEY_SLOTS = 8;
export const LUKS1_KEY_SLOT_ACTIVE = 0x00ac71f3;
export const LUKS1_HEADER_SIZE = LUKS1_OFFSET.keySlots + LUKS1_KEY_SLOTS * LUKS1_KEY_SLOT_SIZE;

const F = "luks";

export interface Luks1Header {
  payloadOffsetSectors: number;
  keyBytes: number;
  keySlots: { active: boolean; materialOffsetSectors: number; stripes: number }[];
}

/** Parses the LUKS1 phdr (592 bytes). */
export function parseLuks1Header(bytes: Uint8Array): Luks1Header {
  const r = new FieldReader(bytes, F);
  r.need(0, LUKS1_HEADER_SIZE, "header");
  if (!hasBytesAt(bytes, 0, LUKS_MAGIC)) throw new MalformedImageError(F, "magic not found");
  const keySlots = Array.from({ length: LUKS1_KEY_SLOTS }, (_, i) => {
    const at = LUKS1_OFFSET.keySlots + i * LUKS1_KEY_SLOT_SIZE;
    return {
      active: r.u32be(at + LUKS1_KEY_SLOT_OFFSET.active, "key slot state") === LUKS1_KEY_SLOT_ACTIVE,
      materialOffsetSectors: r.u32be(at + LUKS1_KEY_SLOT_OFFSET.materialOffset, "key material offset"),
      stripes: r.u32be(at + LUKS1_KEY_SLOT_OFFSET.stripes, "stripes"),
    };
  });
  const keyBytes = r.u32be(LUKS1_OFFSET.keyBytes, "key bytes");
  if (keyBytes === 0 || keyBytes > 512) throw new MalformedImageError(F, `key size ${keyBytes} is invalid`);
  return { payloadOffsetSectors: r.u32be(LUKS1_OFFSET.payloadOffset, "payload offset"), keyBytes, keySlots };
}

class LuksSession implements FormatSession {
  constructor(private readonly layer: StreamLayer) {}
  advance(): void {}
  report(): FormatReport {
    const head = this.layer.head();
    const version = new FieldReader(head, F).u16be(LUKS1_OFFSET.version, "version");
    const fileSize = this.layer.position;
    if (version === 2) return { virtualSize: rawVirtualSize(fileSize), subformat: "luks2", checks: [] };
    if (version !== 1) throw new MalformedImageError(F, `version ${version} unknown`);
    const h = parseLuks1Header(head);
    const payload = BigInt(h.payloadOffsetSectors) * BigInt(SECTOR);
    const total = rawVirtualSize(fileSize);
    let bounds: string | undefined;
    if (payload > total) bounds = `the payload offset ${payload} lies outside the ${fileSize}-byte file`;
    for (const slot of h.keySlots.filter((s) => s.active)) {
      const end =
        BigInt(slot.materialOffsetSectors) * BigInt(SECTOR) + BigInt(h.keyBytes) * BigInt(slot.stripes);
      if (end > payload)
        bounds ??= `a key slot's material (ending at ${end}) overlaps the payload at ${payload}`;
    }
    return {
      virtualSize: payload > total ? 0n : total - payload,
      subformat: "luks1",
      checks: [check(CHECK.luksTableBounds, bounds)],
    };
  }
}

/** LUKS format module: "LUKS\xba\xbe" at offset 0 (version 1 or 2). */
export const luksFormat: FormatModule = {
  name: "luks",
  probe: (head) => hasBytesAt(head, 0, LUKS_MAGIC),
  subformatFromProbe(head) {
    if (head.length < 8) return undefined;
    const version = new FieldReader(head, F).u16be(LUKS1_OFFSET.version, "version");
    return version === 1 ? "luks1" : version === 2 ? "luks2" : undefined;
  },
  open: (layer) => new LuksSession(layer),
};
