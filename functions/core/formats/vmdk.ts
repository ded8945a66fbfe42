/**
 * VMware VMDK: hosted sparse extents ("KDMV", little-endian, used by monolithicSparse and
 * streamOptimized) with an embedded text descriptor, and descriptor-only text files, which name
 * other files and are therefore refused. Spec: VMware "Virtual Disk Format 5.0"; QEMU's reading
 * of it: block/vmdk.c (whose limits are used below).
 */

import { asciiBytes, FieldReader, hasBytesAt, latin1, MiB, quoteForMessage, SECTOR } from "./bytes.ts";
import type { Region, StreamLayer } from "./capture.ts";
import { CHECK, type CheckName, check } from "./checks.ts";
import { MalformedImageError } from "./errors.ts";
import type { FormatModule, FormatReport, FormatSession } from "./format-module.ts";
import { PROBE_HEAD_BYTES } from "./format-module.ts";

export const VMDK4_MAGIC = asciiBytes("KDMV");
export const VMDK3_MAGIC = asciiBytes("COWD");
export const VMDK_HEADER_SIZE = 512;

export const VMDK_OFFSET = {
  magic: 0,
  version: 4,
  flags: 8,
  capacity: 12,
  grainSize: 20,
  descriptorOffset: 28,
  descriptorSize: 36,
  numGTEsPerGT: 44,
  rgdOffset: 48,
  gdOffset: 56,
  overHead: 64,
  compressAlgorithm: 77,
} as const;

/** gdOffset meaning "read the footer at the end of the stream" (streamOptimized). */
export const VMDK_GD_AT_END = 0xffffffffffffffffn;
/** Footer marker + footer header + end-of-stream marker, as laid out at the end of a stream. */
export const VMDK_FOOTER_FROM_END = 1536;
export const VMDK_MARKER_FOOTER = 3;
/** Stream marker fields: sector count or value, payload size, marker type. */
export const VMDK_MARKER_OFFSET = { value: 0, size: 8, type: 12 } as const;
/** QEMU's limits: descriptor text (vmdk_read_desc), grains of at most 1 GiB, 512 GTEs per GT. */
export const VMDK_MAX_DESCRIPTOR_BYTES = 1 * MiB - 1;
export const VMDK_MAX_GRAIN_SECTORS = 0x200000n;
export const VMDK_MAX_GTES_PER_GT = 512;
/** The line QEMU's probe needs after comments and blank lines of a text descriptor, in 2 KiB. */
export const VMDK_TEXT_PROBE_BYTES = 2048;

/** createTypes accepted: single-file sparse images that QEMU reads from the image alone. */
export const VMDK_ALLOWED_CREATE_TYPES = ["monolithicSparse", "streamOptimized"] as const;

export interface VmdkSparseHeader {
  version: number;
  flags: number;
  capacity: bigint;
  grainSize: bigint;
  descriptorOffset: bigint;
  descriptorSize: bigint;
  numGTEsPerGT: number;
  rgdOffset: bigint;
  gdOffset: bigint;
}

export interface VmdkExtent {
  access: string;
  sectors: bigint;
  type: string;
  fileName?: string;
}

export interface VmdkDescriptor {
  createType?: string;
  parentFileNameHint?: string;
  extents: VmdkExtent[];
}

const F = "vmdk";

/** Parses and validates a hosted sparse extent header ("KDMV"). */
export function parseVmdkSparseHeader(bytes: Uint8Array): VmdkSparseHeader {
  const r = new FieldReader(bytes, F);
  r.need(0, VMDK_OFFSET.compressAlgorithm + 2, "sparse header");
  if (!hasBytesAt(bytes, 0, VMDK4_MAGIC)) throw new MalformedImageError(F, "magic KDMV not found");
  const header: VmdkSparseHeader = {
    version: r.u32le(VMDK_OFFSET.version, "version"),
    flags: r.u32le(VMDK_OFFSET.flags, "flags"),
    capacity: r.u64le(VMDK_OFFSET.capacity, "capacity"),
    grainSize: r.u64le(VMDK_OFFSET.grainSize, "grainSize"),
    descriptorOffset: r.u64le(VMDK_OFFSET.descriptorOffset, "descriptorOffset"),
    descriptorSize: r.u64le(VMDK_OFFSET.descriptorSize, "descriptorSize"),
    numGTEsPerGT: r.u32le(VMDK_OFFSET.numGTEsPerGT, "numGTEsPerGT"),
    rgdOffset: r.u64le(VMDK_OFFSET.rgdOffset, "rgdOffset"),
    gdOffset: r.u64le(VMDK_OFFSET.gdOffset, "gdOffset"),
  };
  if (header.version < 1 || header.version > 3)
    throw new MalformedImageError(F, `version ${header.version} unsupported`);
  if (header.grainSize === 0n || header.grainSize > VMDK_MAX_GRAIN_SECTORS) {
    throw new MalformedImageError(F, `grainSize ${header.grainSize} sectors is invalid`);
  }
  if (header.numGTEsPerGT === 0 || header.numGTEsPerGT > VMDK_MAX_GTES_PER_GT) {
    throw new MalformedImageError(F, `numGTEsPerGT ${header.numGTEsPerGT} is invalid`);
  }
  return header;
}

/** Number of grain directory entries the capacity needs (QEMU's l1_size). */
export function vmdkGrainDirectoryEntries(h: VmdkSparseHeader): bigint {
  const perEntry = BigInt(h.numGTEsPerGT) * h.grainSize;
  return (h.capacity + perEntry - 1n) / perEntry;
}

const EXTENT_LINE = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$/i;
const FIELD_LINE = /^([A-Za-z0-9_.]+)\s*=\s*(.*)$/;

/** Parses descriptor text cautiously: every line must be a comment, a field, or an extent. */
export function parseVmdkDescriptor(text: string): VmdkDescriptor {
  const descriptor: VmdkDescriptor = { extents: [] };
  const nul = text.indexOf("\0");
  const body = nul === -1 ? text : text.slice(0, nul);
  for (const rawLine of body.split("\n")) {
    const line = rawLine.trim();
    if (line === "" || line.startsWith("#")) continue;
    const extent = EXTENT_LINE.exec(line);
    if (extent !== null) {
      const [, access, sectors, type, fileName] = extent;
      descriptor.extents.push({
        access: (access as string).toUpperCase(),
        sectors: BigInt(sectors as string),
        type: (type as string).toUpperCase(),
        ...(fileName === undefined ? {} : { fileName }),
      });
      continue;
    }
    const field = FIELD_LINE.exec(line);
    if (field === null)
      throw new MalformedImageError(F, `descriptor line ${quoteForMessage(line, 60)} is not understood`);
    const [, key, rawValue] = field;
    const value = (rawValue as string).trim().replace(/^"(.*)"$/, "$1");
    if ((key as string).toLowerCase() === "createtype") descriptor.createType = value;
    if ((key as string).toLowerCase() === "parentfilenamehint") descriptor.parentFileNameHint = value;
  }
  return descriptor;
}

/** QEMU's text probe: comments and blank lines, then a `version=N` line, within the first 2 KiB. */
export function looksLikeVmdkDescriptor(head: Uint8Array): boolean {
  const text = latin1(head.subarray(0, VMDK_TEXT_PROBE_BYTES));
  let p = 0;
  while (p < text.length) {
    if (text[p] === "#") {
      const eol = text.indexOf("\n", p);
      if (eol === -1) return false;
      p = eol + 1;
      continue;
    }
    if (text[p] === " ") {
      while (p < text.length && text[p] === " ") p++;
      if (text[p] === "\r") p++;
      if (p >= text.length || text[p] !== "\n") return false;
      p++;
      continue;
    }
    return /^version=[123]\r?\n/.test(text.slice(p, p + 11));
  }
  return false;
}

function createTypeProblem(d: VmdkDescriptor): string | undefined {
  const type = d.createType;
  if (type !== undefined && (VMDK_ALLOWED_CREATE_TYPES as readonly string[]).includes(type)) return undefined;
  return `createType ${type === undefined ? "(missing)" : quoteForMessage(type, 40)} is not accepted; only ${VMDK_ALLOWED_CREATE_TYPES.join(" and ")} are`;
}

function backingProblem(d: VmdkDescriptor): string | undefined {
  if (d.parentFileNameHint === undefined) return undefined;
  return `the image refers to a parent file (${quoteForMessage(d.parentFileNameHint)}); images that read other files are refused`;
}

class VmdkSession implements FormatSession {
  private descriptor: Region | undefined;
  private looked = false;
  constructor(private readonly layer: StreamLayer) {}

  advance(): void {
    if (this.looked || this.layer.position < VMDK_HEADER_SIZE) return;
    this.looked = true;
    const head = this.layer.head();
    if (!hasBytesAt(head, 0, VMDK4_MAGIC)) return;
    const h = parseVmdkSparseHeader(head);
    if (h.descriptorOffset === 0n) return;
    const offset = h.descriptorOffset * BigInt(SECTOR);
    const length = h.descriptorSize * BigInt(SECTOR);
    if (offset > BigInt(Number.MAX_SAFE_INTEGER))
      throw new MalformedImageError(F, "descriptor lies outside any file");
    const capped = Number(
      length < BigInt(VMDK_MAX_DESCRIPTOR_BYTES) ? length : BigInt(VMDK_MAX_DESCRIPTOR_BYTES),
    );
    this.descriptor = this.layer.request(Number(offset), capped, F, "descriptor");
  }

  report(): FormatReport {
    const head = this.layer.head();
    if (hasBytesAt(head, 0, VMDK3_MAGIC)) return this.reportCowd(head);
    if (!hasBytesAt(head, 0, VMDK4_MAGIC)) return this.reportTextDescriptor(head);
    return this.reportSparse(parseVmdkSparseHeader(head));
  }

  private reportCowd(head: Uint8Array): FormatReport {
    const sectors = new FieldReader(head, F).u32le(VMDK_OFFSET.capacity, "disk_sectors");
    return {
      virtualSize: BigInt(sectors) * BigInt(SECTOR),
      subformat: "vmdk3",
      checks: [check(CHECK.vmdkCreateType, "VMDK version 3 (COWD) images are not accepted")],
    };
  }

  private reportTextDescriptor(head: Uint8Array): FormatReport {
    const d = parseVmdkDescriptor(latin1(head.subarray(0, Math.min(head.length, VMDK_MAX_DESCRIPTOR_BYTES))));
    const named = d.extents.map((e) => e.fileName).filter((n): n is string => n !== undefined);
    const virtualSize = d.extents.reduce((sum, e) => sum + e.sectors, 0n) * BigInt(SECTOR);
    return {
      virtualSize,
      subformat: d.createType ?? "descriptor",
      checks: [
        check(
          CHECK.vmdkExtentFile,
          `the image is a descriptor whose data lives in other files (${named.map((n) => quoteForMessage(n)).join(", ") || "no extents"}); images that read other files are refused`,
        ),
        check(CHECK.vmdkBackingFile, backingProblem(d)),
        check(CHECK.vmdkCreateType, createTypeProblem(d)),
      ],
    };
  }

  private reportSparse(h: VmdkSparseHeader): FormatReport {
    const fileSize = this.layer.position;
    let gdOffset = h.gdOffset;
    let effective = h;
    if (gdOffset === VMDK_GD_AT_END) {
      // streamOptimized writes the real header in a footer near the end of the stream.
      const tail = this.layer.tail();
      const at = tail.length - VMDK_FOOTER_FROM_END;
      const r = new FieldReader(tail, F);
      if (at < 0 || r.u32le(at + VMDK_MARKER_OFFSET.type, "footer marker type") !== VMDK_MARKER_FOOTER) {
        throw new MalformedImageError(F, "grain directory is at the end but the stream footer is missing");
      }
      effective = parseVmdkSparseHeader(tail.subarray(at + SECTOR, at + 2 * SECTOR));
      gdOffset = effective.gdOffset;
    }
    if (this.descriptor === undefined || !this.descriptor.complete) {
      throw new MalformedImageError(F, "embedded descriptor is missing or cut short");
    }
    const d = parseVmdkDescriptor(latin1(this.descriptor.data));
    const extentProblems: string[] = [];
    if (d.extents.length !== 1)
      extentProblems.push(`${d.extents.length} extents where a single-file image has 1`);
    for (const e of d.extents) {
      if (e.type !== "SPARSE") extentProblems.push(`extent of type ${quoteForMessage(e.type, 20)}`);
      if (e.fileName !== undefined && /[/\\]/.test(e.fileName)) {
        extentProblems.push(`extent names another file (${quoteForMessage(e.fileName)})`);
      }
    }
    const gdBytes = vmdkGrainDirectoryEntries(effective) * 4n;
    const size = BigInt(fileSize);
    let bounds: string | undefined;
    for (const [name, sectorOffset] of [
      ["grain directory", gdOffset],
      ["redundant grain directory", effective.rgdOffset],
    ] as const) {
      if (sectorOffset === 0n && name === "redundant grain directory") continue;
      const offset = sectorOffset * BigInt(SECTOR);
      if (offset === 0n || offset + gdBytes > size) {
        bounds = `the ${name} (offset ${offset}, ${gdBytes} bytes) lies outside the ${fileSize}-byte file`;
        break;
      }
    }
    const checks: [CheckName, string | undefined][] = [
      [
        CHECK.vmdkExtentFile,
        extentProblems.length > 0
          ? `the descriptor does not describe this file alone (${extentProblems.join("; ")}); images that read other files are refused`
          : undefined,
      ],
      [CHECK.vmdkBackingFile, backingProblem(d)],
      [CHECK.vmdkCreateType, createTypeProblem(d)],
      [CHECK.vmdkTableBounds, bounds],
    ];
    return {
      virtualSize: effective.capacity * BigInt(SECTOR),
      subformat: d.createType ?? "unknown",
      checks: checks.map(([name, problem]) => check(name, problem)),
    };
  }
}

/** VMDK format module: KDMV or COWD magic, or a text descriptor QEMU's probe would accept. */
export const vmdkFormat: FormatModule = {
  name: "vmdk",
  probe: (head) =>
    hasBytesAt(head, 0, VMDK4_MAGIC) || hasBytesAt(head, 0, VMDK3_MAGIC) || looksLikeVmdkDescriptor(head),
  subformatFromProbe(head) {
    try {
      if (hasBytesAt(head, 0, VMDK3_MAGIC)) return "vmdk3";
      if (!hasBytesAt(head, 0, VMDK4_MAGIC)) return parseVmdkDescriptor(latin1(head)).createType;
      const h = parseVmdkSparseHeader(head);
      const offset = Number(h.descriptorOffset) * SECTOR;
      const end = Math.min(offset + Number(h.descriptorSize) * SECTOR, PROBE_HEAD_BYTES, head.length);
      if (offset === 0 || end <= offset) return undefined;
      return parseVmdkDescriptor(latin1(head.subarray(offset, end))).createType;
    } catch {
      // A header the probe window cannot parse: the full inspector reports it as malformed.
      return undefined;
    }
  },
  open: (layer) => new VmdkSession(layer),
};
