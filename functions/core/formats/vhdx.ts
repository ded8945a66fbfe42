/**
 * Microsoft VHDX: little-endian; a file identifier, two headers, a region table at 192 KiB that
 * locates the block allocation table (BAT) and the metadata region, whose table locates the items
 * (virtual disk size, file parameters, parent locator). Spec: [MS-VHDX]; QEMU's reading of it:
 * block/vhdx.c. Checksums are not verified: QEMU verifies them and refuses a bad one, which is safe.
 */

import { asciiBytes, FieldReader, hasBytesAt, KiB, MiB, SECTOR, TiB } from "./bytes.ts";
import type { Region, StreamLayer } from "./capture.ts";
import { CHECK, check } from "./checks.ts";
import { MalformedImageError } from "./errors.ts";
import type { FormatModule, FormatReport, FormatSession } from "./format-module.ts";

export const VHDX_FILE_SIGNATURE = asciiBytes("vhdxfile");
export const VHDX_REGION_TABLE_OFFSET = 192 * KiB;
export const VHDX_REGION_TABLE_SIZE = 64 * KiB;
export const VHDX_REGION_SIGNATURE = asciiBytes("regi");
export const VHDX_REGION_ENTRY_SIZE = 32;
/** Region table header and entry fields (offsets within the header / within one entry). */
export const VHDX_REGION_OFFSET = { entryCount: 8, guid: 0, fileOffset: 16, length: 24, flags: 28 } as const;
export const VHDX_METADATA_OFFSET = { entryCount: 10, guid: 0, itemOffset: 16, itemLength: 20 } as const;
/** File parameters item: block size, then flags. */
export const VHDX_FILE_PARAMS_OFFSET = { blockSize: 0, flags: 4 } as const;
export const VHDX_GUID_SIZE = 16;
export const VHDX_REGION_REQUIRED = 1;
export const VHDX_REGION_HEADER_SIZE = 16;
export const VHDX_MAX_REGION_ENTRIES = 2047;
export const VHDX_METADATA_TABLE_SIZE = 64 * KiB;
export const VHDX_METADATA_SIGNATURE = asciiBytes("metadata");
export const VHDX_METADATA_HEADER_SIZE = 32;
export const VHDX_METADATA_ENTRY_SIZE = 32;
export const VHDX_MAX_METADATA_ENTRIES = 2047;
/** Spec limits: blocks of 1 MiB..256 MiB, disks of at most 64 TiB. */
export const VHDX_MIN_BLOCK_SIZE = 1 * MiB;
export const VHDX_MAX_BLOCK_SIZE = 256 * MiB;
export const VHDX_MAX_VIRTUAL_SIZE = 64n * BigInt(TiB);

/** GUIDs as written on disk (first three fields little-endian). */
export function vhdxGuid(text: string): Uint8Array {
  const hex = text.replace(/-/g, "");
  const bytes = Uint8Array.from({ length: 16 }, (_, i) => Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16));
  const swap = (from: number, length: number) => bytes.subarray(from, from + length).reverse();
  swap(0, 4);
  swap(4, 2);
  swap(6, 2);
  return bytes;
}

export const VHDX_GUID = {
  batRegion: vhdxGuid("2DC27766-F623-4200-9D64-115E9BFD4A08"),
  metadataRegion: vhdxGuid("8B7CA206-4790-4B9A-B8FE-575F050F886E"),
  fileParameters: vhdxGuid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B"),
  virtualDiskSize: vhdxGuid("2FA54224-CD1B-4876-B211-5DBED83BF4B8"),
  logicalSectorSize: vhdxGuid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F"),
  parentLocator: vhdxGuid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"),
} as const;

export const VHDX_FILE_PARAMS_LEAVE_BLOCKS_ALLOCATED = 1;
export const VHDX_FILE_PARAMS_HAS_PARENT = 2;

export interface VhdxRegion {
  guid: Uint8Array;
  fileOffset: bigint;
  length: number;
  required: boolean;
}

export interface VhdxMetadataItem {
  guid: Uint8Array;
  offset: number;
  length: number;
}

const F = "vhdx";

function sameGuid(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Parses the region table (64 KiB at 192 KiB). */
export function parseVhdxRegionTable(bytes: Uint8Array): VhdxRegion[] {
  const r = new FieldReader(bytes, F);
  if (!hasBytesAt(bytes, 0, VHDX_REGION_SIGNATURE))
    throw new MalformedImageError(F, "region table signature not found");
  const count = r.u32le(VHDX_REGION_OFFSET.entryCount, "region entry count");
  if (count > VHDX_MAX_REGION_ENTRIES)
    throw new MalformedImageError(F, `${count} region entries (limit 2047)`);
  const regions: VhdxRegion[] = [];
  for (let i = 0; i < count; i++) {
    const at = VHDX_REGION_HEADER_SIZE + i * VHDX_REGION_ENTRY_SIZE;
    regions.push({
      guid: r.slice(at + VHDX_REGION_OFFSET.guid, VHDX_GUID_SIZE, "region guid"),
      fileOffset: r.u64le(at + VHDX_REGION_OFFSET.fileOffset, "region offset"),
      length: r.u32le(at + VHDX_REGION_OFFSET.length, "region length"),
      required: (r.u32le(at + VHDX_REGION_OFFSET.flags, "region flags") & VHDX_REGION_REQUIRED) !== 0,
    });
  }
  for (const region of regions) {
    const known =
      sameGuid(region.guid, VHDX_GUID.batRegion) || sameGuid(region.guid, VHDX_GUID.metadataRegion);
    if (region.required && !known) throw new MalformedImageError(F, "a required region is unknown");
  }
  return regions;
}

/** Parses the metadata table (first 64 KiB of the metadata region). */
export function parseVhdxMetadataTable(bytes: Uint8Array): VhdxMetadataItem[] {
  const r = new FieldReader(bytes, F);
  if (!hasBytesAt(bytes, 0, VHDX_METADATA_SIGNATURE))
    throw new MalformedImageError(F, "metadata table signature not found");
  const count = r.u16le(VHDX_METADATA_OFFSET.entryCount, "metadata entry count");
  if (count > VHDX_MAX_METADATA_ENTRIES)
    throw new MalformedImageError(F, `${count} metadata entries (limit 2047)`);
  const items: VhdxMetadataItem[] = [];
  for (let i = 0; i < count; i++) {
    const at = VHDX_METADATA_HEADER_SIZE + i * VHDX_METADATA_ENTRY_SIZE;
    items.push({
      guid: r.slice(at + VHDX_METADATA_OFFSET.guid, VHDX_GUID_SIZE, "item guid"),
      offset: r.u32le(at + VHDX_METADATA_OFFSET.itemOffset, "item offset"),
      length: r.u32le(at + VHDX_METADATA_OFFSET.itemLength, "item length"),
    });
  }
  return items;
}

function findRegion(regions: VhdxRegion[], guid: Uint8Array): VhdxRegion {
  const found = regions.filter((x) => sameGuid(x.guid, guid));
  if (found.length !== 1)
    throw new MalformedImageError(
      F,
      `expected one ${guid === VHDX_GUID.batRegion ? "BAT" : "metadata"} region, found ${found.length}`,
    );
  return found[0] as VhdxRegion;
}

function toOffset(value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER))
    throw new MalformedImageError(F, `${what} ${value} lies outside any file`);
  return Number(value);
}

class VhdxSession implements FormatSession {
  private regions: VhdxRegion[] | undefined;
  private table: Region | undefined;
  private items: Map<string, { item: VhdxMetadataItem; region: Region }> | undefined;
  private parentLocator = false;

  constructor(private readonly layer: StreamLayer) {}

  advance(): void {
    if (this.regions === undefined) {
      if (this.layer.position < VHDX_REGION_TABLE_OFFSET + VHDX_REGION_TABLE_SIZE) return;
      const head = this.layer.head();
      if (!hasBytesAt(head, 0, VHDX_FILE_SIGNATURE)) {
        this.regions = [];
        return;
      }
      this.regions = parseVhdxRegionTable(
        head.subarray(VHDX_REGION_TABLE_OFFSET, VHDX_REGION_TABLE_OFFSET + VHDX_REGION_TABLE_SIZE),
      );
      const meta = findRegion(this.regions, VHDX_GUID.metadataRegion);
      if (meta.length < VHDX_METADATA_TABLE_SIZE)
        throw new MalformedImageError(F, "metadata region is smaller than its table");
      this.table = this.layer.request(
        toOffset(meta.fileOffset, "metadata region"),
        VHDX_METADATA_TABLE_SIZE,
        F,
        "metadata table",
      );
    }
    if (this.table === undefined || this.items !== undefined || !this.table.complete) return;
    const meta = findRegion(this.regions, VHDX_GUID.metadataRegion);
    this.items = new Map();
    for (const item of parseVhdxMetadataTable(this.table.data)) {
      if (sameGuid(item.guid, VHDX_GUID.parentLocator)) this.parentLocator = true;
      const wanted = (
        [
          ["virtualDiskSize", VHDX_GUID.virtualDiskSize, 8],
          ["fileParameters", VHDX_GUID.fileParameters, 8],
          ["logicalSectorSize", VHDX_GUID.logicalSectorSize, 4],
        ] as const
      ).find(([, guid]) => sameGuid(item.guid, guid));
      if (wanted === undefined) continue;
      const [key, , size] = wanted;
      if (this.items.has(key)) throw new MalformedImageError(F, `metadata item ${key} appears twice`);
      if (
        item.length < size ||
        item.offset < VHDX_METADATA_TABLE_SIZE ||
        item.offset + item.length > meta.length
      ) {
        throw new MalformedImageError(F, `metadata item ${key} lies outside the metadata region`);
      }
      const offset = toOffset(meta.fileOffset + BigInt(item.offset), "metadata item");
      this.items.set(key, { item, region: this.layer.request(offset, size, F, `metadata item ${key}`) });
    }
  }

  private item(key: string): FieldReader {
    const entry = this.items?.get(key);
    if (entry === undefined) throw new MalformedImageError(F, `metadata item ${key} is missing`);
    if (!entry.region.complete)
      throw new MalformedImageError(F, `metadata item ${key} is out of reach (truncated or out of order)`);
    return new FieldReader(entry.region.data, F);
  }

  report(): FormatReport {
    this.advance();
    if (this.regions === undefined || this.table === undefined) {
      throw new MalformedImageError(F, "file ends before its region table");
    }
    if (!this.table.complete)
      throw new MalformedImageError(F, "metadata table is out of reach (truncated or out of order)");
    const virtualSize = this.item("virtualDiskSize").u64le(0, "virtual disk size");
    const params = this.item("fileParameters");
    const blockSize = params.u32le(VHDX_FILE_PARAMS_OFFSET.blockSize, "block size");
    const flags = params.u32le(VHDX_FILE_PARAMS_OFFSET.flags, "file parameter flags");
    const sectorSize = this.item("logicalSectorSize").u32le(0, "logical sector size");
    if (
      blockSize < VHDX_MIN_BLOCK_SIZE ||
      blockSize > VHDX_MAX_BLOCK_SIZE ||
      (blockSize & (blockSize - 1)) !== 0
    ) {
      throw new MalformedImageError(F, `block size ${blockSize} is invalid`);
    }
    if (sectorSize !== SECTOR && sectorSize !== 4096)
      throw new MalformedImageError(F, `logical sector size ${sectorSize} is invalid`);
    if (virtualSize > VHDX_MAX_VIRTUAL_SIZE)
      throw new MalformedImageError(F, `virtual size ${virtualSize} is above 64 TiB`);
    const differencing = (flags & VHDX_FILE_PARAMS_HAS_PARENT) !== 0 || this.parentLocator;

    const fileSize = BigInt(this.layer.position);
    const bat = findRegion(this.regions, VHDX_GUID.batRegion);
    const meta = findRegion(this.regions, VHDX_GUID.metadataRegion);
    const chunkRatio = (2n ** 23n * BigInt(sectorSize)) / BigInt(blockSize);
    const dataBlocks = (virtualSize + BigInt(blockSize) - 1n) / BigInt(blockSize);
    const batEntries = differencing
      ? ((dataBlocks + chunkRatio - 1n) / chunkRatio) * (chunkRatio + 1n)
      : dataBlocks + (dataBlocks > 0n ? (dataBlocks - 1n) / chunkRatio : 0n);
    let bounds: string | undefined;
    for (const [name, region] of [
      ["block allocation table", bat],
      ["metadata region", meta],
    ] as const) {
      if (region.fileOffset < BigInt(MiB) || region.fileOffset + BigInt(region.length) > fileSize) {
        bounds = `the ${name} (offset ${region.fileOffset}, ${region.length} bytes) lies outside the ${fileSize}-byte file`;
        break;
      }
    }
    if (bounds === undefined && BigInt(bat.length) < batEntries * 8n) {
      bounds = `the block allocation table has room for ${bat.length / 8} entries, the disk needs ${batEntries}`;
    }
    return {
      virtualSize,
      subformat: differencing
        ? "differencing"
        : (flags & VHDX_FILE_PARAMS_LEAVE_BLOCKS_ALLOCATED) !== 0
          ? "fixed"
          : "dynamic",
      checks: [
        check(
          CHECK.vhdxDifferencing,
          differencing
            ? "the image is a differencing disk whose data lives in a parent file; images that read other files are refused"
            : undefined,
        ),
        check(CHECK.vhdxTableBounds, bounds),
      ],
    };
  }
}

/** VHDX format module: "vhdxfile" at offset 0. */
export const vhdxFormat: FormatModule = {
  name: "vhdx",
  probe: (head) => hasBytesAt(head, 0, VHDX_FILE_SIGNATURE),
  open: (layer) => new VhdxSession(layer),
};
