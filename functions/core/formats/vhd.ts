/**
 * Microsoft VHD ("vpc" in QEMU): a 512-byte big-endian footer at the end of the file, with a copy
 * at offset 0 for dynamic and differencing disks, which also have a 1 KiB dynamic header and a
 * block allocation table (BAT). Spec: Microsoft "Virtual Hard Disk Image Format Specification";
 * QEMU's reading of it: block/vpc.c.
 */

import { asciiBytes, FieldReader, hasBytesAt, quoteForMessage, SECTOR } from "./bytes.ts";
import type { Region, StreamLayer } from "./capture.ts";
import { CHECK, check } from "./checks.ts";
import { MalformedImageError } from "./errors.ts";
import type { FormatModule, FormatReport, FormatSession } from "./format-module.ts";

export const VHD_FOOTER_SIZE = 512;
export const VHD_FOOTER_COOKIE = asciiBytes("conectix");
export const VHD_DYNAMIC_COOKIE = asciiBytes("cxsparse");
export const VHD_DYNAMIC_HEADER_SIZE = 1024;

export const VHD_FOOTER_OFFSET = {
  cookie: 0,
  dataOffset: 16,
  creatorApp: 28,
  originalSize: 40,
  currentSize: 48,
  cylinders: 56,
  heads: 58,
  sectorsPerTrack: 59,
  diskType: 60,
} as const;

export const VHD_DYNAMIC_OFFSET = {
  cookie: 0,
  tableOffset: 16,
  maxTableEntries: 28,
  blockSize: 32,
  parentName: 64,
  parentNameLength: 512,
  parentLocators: 576,
} as const;

export const VHD_DISK_TYPE = { fixed: 2, dynamic: 3, differencing: 4 } as const;
/** QEMU's VHD_MAX_SECTORS (2040 GiB) and VHD_MAX_GEOMETRY. */
export const VHD_MAX_SECTORS = 0xff000000n;
export const VHD_MAX_GEOMETRY = 65535n * 16n * 255n;
/** Creator apps whose images QEMU sizes by `current_size` rather than by CHS geometry. */
export const VHD_CURRENT_SIZE_CREATORS = ["win ", "qem2", "d2v ", "CTXS", "tap\0"] as const;

export interface VhdFooter {
  dataOffset: bigint;
  creatorApp: string;
  currentSize: bigint;
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  diskType: number;
}

export interface VhdDynamicHeader {
  tableOffset: bigint;
  maxTableEntries: number;
  blockSize: number;
  parentName: string;
}

const F = "vhd";

/** Parses a 512-byte footer (or its copy at offset 0). */
export function parseVhdFooter(bytes: Uint8Array): VhdFooter {
  const r = new FieldReader(bytes, F);
  r.need(0, VHD_FOOTER_SIZE, "footer");
  if (!hasBytesAt(bytes, 0, VHD_FOOTER_COOKIE)) throw new MalformedImageError(F, "footer cookie not found");
  const creator = r.slice(VHD_FOOTER_OFFSET.creatorApp, 4, "creator_app");
  return {
    dataOffset: r.u64be(VHD_FOOTER_OFFSET.dataOffset, "data_offset"),
    creatorApp: String.fromCharCode(...creator),
    currentSize: r.u64be(VHD_FOOTER_OFFSET.currentSize, "current_size"),
    cylinders: r.u16be(VHD_FOOTER_OFFSET.cylinders, "cylinders"),
    heads: r.u8(VHD_FOOTER_OFFSET.heads, "heads"),
    sectorsPerTrack: r.u8(VHD_FOOTER_OFFSET.sectorsPerTrack, "sectors per track"),
    diskType: r.u32be(VHD_FOOTER_OFFSET.diskType, "disk_type"),
  };
}

/** Parses the 1 KiB dynamic disk header. */
export function parseVhdDynamicHeader(bytes: Uint8Array): VhdDynamicHeader {
  const r = new FieldReader(bytes, F);
  r.need(0, VHD_DYNAMIC_HEADER_SIZE, "dynamic header");
  if (!hasBytesAt(bytes, 0, VHD_DYNAMIC_COOKIE))
    throw new MalformedImageError(F, "dynamic header cookie not found");
  const blockSize = r.u32be(VHD_DYNAMIC_OFFSET.blockSize, "block_size");
  if (blockSize < SECTOR || (blockSize & (blockSize - 1)) !== 0) {
    throw new MalformedImageError(F, `block_size ${blockSize} is not a power of two of at least 512`);
  }
  const nameBytes = r.slice(
    VHD_DYNAMIC_OFFSET.parentName,
    VHD_DYNAMIC_OFFSET.parentNameLength,
    "parent name",
  );
  let parentName = "";
  for (let i = 0; i + 1 < nameBytes.length; i += 2) {
    const unit = ((nameBytes[i] ?? 0) << 8) | (nameBytes[i + 1] ?? 0);
    if (unit === 0) break;
    parentName += String.fromCharCode(unit);
  }
  return {
    tableOffset: r.u64be(VHD_DYNAMIC_OFFSET.tableOffset, "table_offset"),
    maxTableEntries: r.u32be(VHD_DYNAMIC_OFFSET.maxTableEntries, "max_table_entries"),
    blockSize,
    parentName,
  };
}

/** Virtual size as QEMU computes it: CHS geometry unless the creator app says otherwise. */
export function vhdVirtualSize(footer: VhdFooter): bigint {
  const chs = BigInt(footer.cylinders) * BigInt(footer.heads) * BigInt(footer.sectorsPerTrack);
  const useChs = !(VHD_CURRENT_SIZE_CREATORS as readonly string[]).includes(footer.creatorApp);
  const sectors = !useChs || chs === VHD_MAX_GEOMETRY ? footer.currentSize / BigInt(SECTOR) : chs;
  if (sectors > VHD_MAX_SECTORS)
    throw new MalformedImageError(F, `disk of ${sectors} sectors exceeds 2040 GiB`);
  return sectors * BigInt(SECTOR);
}

function subformatOf(diskType: number): string {
  switch (diskType) {
    case VHD_DISK_TYPE.fixed:
      return "fixed";
    case VHD_DISK_TYPE.dynamic:
      return "dynamic";
    case VHD_DISK_TYPE.differencing:
      return "differencing";
    default:
      throw new MalformedImageError(F, `disk type ${diskType} unknown`);
  }
}

class VhdSession implements FormatSession {
  private dynamicHeader: Region | undefined;
  private looked = false;
  constructor(private readonly layer: StreamLayer) {}

  advance(): void {
    if (this.looked || this.layer.position < VHD_FOOTER_SIZE) return;
    this.looked = true;
    const head = this.layer.head();
    if (!hasBytesAt(head, 0, VHD_FOOTER_COOKIE)) return;
    const footer = parseVhdFooter(head.subarray(0, VHD_FOOTER_SIZE));
    if (footer.diskType === VHD_DISK_TYPE.fixed) return;
    if (footer.dataOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new MalformedImageError(F, `data_offset ${footer.dataOffset} lies outside any file`);
    }
    this.dynamicHeader = this.layer.request(
      Number(footer.dataOffset),
      VHD_DYNAMIC_HEADER_SIZE,
      F,
      "dynamic header",
    );
  }

  report(): FormatReport {
    const head = this.layer.head();
    const tail = this.layer.tail();
    const fileSize = this.layer.position;
    const footerBytes = hasBytesAt(head, 0, VHD_FOOTER_COOKIE)
      ? head.subarray(0, VHD_FOOTER_SIZE)
      : tail.subarray(tail.length - VHD_FOOTER_SIZE);
    const footer = parseVhdFooter(footerBytes);
    const subformat = subformatOf(footer.diskType);
    const virtualSize = vhdVirtualSize(footer);
    if (footer.diskType === VHD_DISK_TYPE.fixed) {
      const data = BigInt(fileSize - VHD_FOOTER_SIZE);
      return {
        virtualSize,
        subformat,
        checks: [
          check(CHECK.vhdDifferencing, undefined),
          check(
            CHECK.vhdTableBounds,
            virtualSize > data
              ? `the disk claims ${virtualSize} bytes but the file holds only ${data} bytes of data`
              : undefined,
          ),
        ],
      };
    }
    if (this.dynamicHeader === undefined || !this.dynamicHeader.complete) {
      throw new MalformedImageError(F, `dynamic header at ${footer.dataOffset} is missing (truncated file)`);
    }
    const dyn = parseVhdDynamicHeader(this.dynamicHeader.data);
    const batEnd = dyn.tableOffset + BigInt(dyn.maxTableEntries) * 4n;
    const covered = BigInt(dyn.maxTableEntries) * BigInt(dyn.blockSize);
    let bounds: string | undefined;
    if (batEnd > BigInt(fileSize) || dyn.tableOffset < BigInt(VHD_FOOTER_SIZE)) {
      bounds = `the block allocation table (offset ${dyn.tableOffset}, ${dyn.maxTableEntries} entries) lies outside the ${fileSize}-byte file`;
    } else if (covered < virtualSize) {
      bounds = `the block allocation table covers ${covered} bytes, less than the ${virtualSize}-byte disk`;
    }
    return {
      virtualSize,
      subformat,
      checks: [
        check(
          CHECK.vhdDifferencing,
          footer.diskType === VHD_DISK_TYPE.differencing
            ? `the image is a differencing disk whose data lives in a parent file (${quoteForMessage(dyn.parentName)}); images that read other files are refused`
            : undefined,
        ),
        check(CHECK.vhdTableBounds, bounds),
      ],
    };
  }
}

/** VHD format module: footer cookie at offset 0 (dynamic copy) or in the last 512 bytes (fixed). */
export const vhdFormat: FormatModule = {
  name: "vhd",
  probe: (head, tail) =>
    hasBytesAt(head, 0, VHD_FOOTER_COOKIE) ||
    hasBytesAt(tail, tail.length - VHD_FOOTER_SIZE, VHD_FOOTER_COOKIE),
  subformatFromProbe(head, tail) {
    const footer = hasBytesAt(head, 0, VHD_FOOTER_COOKIE)
      ? head.subarray(0, VHD_FOOTER_SIZE)
      : tail.subarray(tail.length - VHD_FOOTER_SIZE);
    if (footer.length < VHD_FOOTER_SIZE) return undefined;
    const type = new FieldReader(footer, F).u32be(VHD_FOOTER_OFFSET.diskType, "disk_type");
    return Object.entries(VHD_DISK_TYPE).find(([, v]) => v === type)?.[0];
  },
  open: (layer) => new VhdSession(layer),
};
