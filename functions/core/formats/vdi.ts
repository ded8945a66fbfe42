/**
 * VirtualBox VDI: a little-endian header (signature at 0x40) followed by a block map of 32-bit
 * entries and the data blocks. Layout and limits as QEMU reads them (block/vdi.c).
 */

import { FieldReader, SECTOR } from "./bytes.ts";
import type { StreamLayer } from "./capture.ts";
import { CHECK, check } from "./checks.ts";
import { MalformedImageError } from "./errors.ts";
import type { FormatModule, FormatReport, FormatSession } from "./format-module.ts";

export const VDI_SIGNATURE = 0xbeda107f;
export const VDI_HEADER_SIZE = 512;
export const VDI_VERSION_1_1 = 0x00010001;

export const VDI_OFFSET = {
  signature: 0x40,
  version: 0x44,
  headerSize: 0x48,
  imageType: 0x4c,
  offsetBmap: 0x154,
  offsetData: 0x158,
  sectorSize: 0x168,
  diskSize: 0x170,
  blockSize: 0x178,
  blockExtra: 0x17c,
  blocksInImage: 0x180,
  blocksAllocated: 0x184,
  uuidLink: 0x1a8,
  uuidParent: 0x1b8,
} as const;

export const VDI_IMAGE_TYPE = { dynamic: 1, static: 2, undo: 3, diff: 4 } as const;
/** QEMU accepts only 1 MiB blocks and 512-byte sectors. */
export const VDI_BLOCK_SIZE = 1024 * 1024;

export interface VdiHeader {
  version: number;
  imageType: number;
  offsetBmap: number;
  offsetData: number;
  diskSize: bigint;
  blockSize: number;
  blocksInImage: number;
  hasLink: boolean;
  hasParent: boolean;
}

const F = "vdi";

function isZero(bytes: Uint8Array): boolean {
  return bytes.every((b) => b === 0);
}

/** Parses and validates the 512-byte header. */
export function parseVdiHeader(bytes: Uint8Array): VdiHeader {
  const r = new FieldReader(bytes, F);
  r.need(0, VDI_HEADER_SIZE, "header");
  if (r.u32le(VDI_OFFSET.signature, "signature") !== VDI_SIGNATURE)
    throw new MalformedImageError(F, "signature not found");
  const h: VdiHeader = {
    version: r.u32le(VDI_OFFSET.version, "version"),
    imageType: r.u32le(VDI_OFFSET.imageType, "image_type"),
    offsetBmap: r.u32le(VDI_OFFSET.offsetBmap, "offset_bmap"),
    offsetData: r.u32le(VDI_OFFSET.offsetData, "offset_data"),
    diskSize: r.u64le(VDI_OFFSET.diskSize, "disk_size"),
    blockSize: r.u32le(VDI_OFFSET.blockSize, "block_size"),
    blocksInImage: r.u32le(VDI_OFFSET.blocksInImage, "blocks_in_image"),
    hasLink: !isZero(r.slice(VDI_OFFSET.uuidLink, 16, "uuid_link")),
    hasParent: !isZero(r.slice(VDI_OFFSET.uuidParent, 16, "uuid_parent")),
  };
  if (h.version !== VDI_VERSION_1_1)
    throw new MalformedImageError(F, `version 0x${h.version.toString(16)} unsupported`);
  if (r.u32le(VDI_OFFSET.sectorSize, "sector_size") !== SECTOR)
    throw new MalformedImageError(F, "sector size is not 512");
  if (h.blockSize !== VDI_BLOCK_SIZE)
    throw new MalformedImageError(F, `block size ${h.blockSize} is not 1 MiB`);
  if (r.u32le(VDI_OFFSET.blockExtra, "block_extra") !== 0)
    throw new MalformedImageError(F, "block_extra is not 0");
  if (h.offsetBmap % SECTOR || h.offsetData % SECTOR)
    throw new MalformedImageError(F, "table offsets not sector aligned");
  if (BigInt(h.blocksInImage) * BigInt(h.blockSize) < h.diskSize) {
    throw new MalformedImageError(F, `${h.blocksInImage} blocks cannot hold a ${h.diskSize}-byte disk`);
  }
  return h;
}

class VdiSession implements FormatSession {
  constructor(private readonly layer: StreamLayer) {}
  advance(): void {}
  report(): FormatReport {
    const h = parseVdiHeader(this.layer.head());
    const fileSize = this.layer.position;
    const bmapEnd = h.offsetBmap + h.blocksInImage * 4;
    let bounds: string | undefined;
    if (h.offsetBmap < VDI_HEADER_SIZE || bmapEnd > fileSize || bmapEnd > h.offsetData) {
      bounds = `the block map (offset ${h.offsetBmap}, ${h.blocksInImage} entries) lies outside the header-to-data area of the ${fileSize}-byte file`;
    } else if (h.offsetData > fileSize) {
      bounds = `the data area offset ${h.offsetData} lies outside the ${fileSize}-byte file`;
    }
    const typeName = Object.entries(VDI_IMAGE_TYPE).find(([, v]) => v === h.imageType)?.[0];
    if (typeName === undefined) throw new MalformedImageError(F, `image type ${h.imageType} unknown`);
    return {
      // QEMU counts whole sectors: disk_size / 512.
      virtualSize: (h.diskSize / BigInt(SECTOR)) * BigInt(SECTOR),
      subformat: typeName,
      checks: [
        check(
          CHECK.vdiDifferencing,
          h.imageType === VDI_IMAGE_TYPE.diff ||
            h.imageType === VDI_IMAGE_TYPE.undo ||
            h.hasLink ||
            h.hasParent
            ? "the image is a differencing or undo disk whose data lives in a parent image; images that read other files are refused"
            : undefined,
        ),
        check(CHECK.vdiTableBounds, bounds),
      ],
    };
  }
}

/** VDI format module: signature 0xbeda107f at 0x40. */
export const vdiFormat: FormatModule = {
  name: "vdi",
  probe: (head) =>
    head.length >= VDI_OFFSET.signature + 4 &&
    new FieldReader(head, F).u32le(VDI_OFFSET.signature, "signature") === VDI_SIGNATURE,
  subformatFromProbe(head) {
    if (head.length < VDI_HEADER_SIZE) return undefined;
    const type = new FieldReader(head, F).u32le(VDI_OFFSET.imageType, "image_type");
    return Object.entries(VDI_IMAGE_TYPE).find(([, v]) => v === type)?.[0];
  },
  open: (layer) => new VdiSession(layer),
};
