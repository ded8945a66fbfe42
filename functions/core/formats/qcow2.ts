/**
 * QEMU qcow2 (versions 2 and 3). Spec: qemu docs/interop/qcow2.txt. Big-endian throughout.
 * Only the header, its extensions and the backing file name are captured; the limits below are
 * QEMU's own (block/qcow2.h), so anything QEMU would refuse to open is refused here first.
 */

import { asciiBytes, FieldReader, hasBytesAt, latin1, MiB, quoteForMessage } from "./bytes.ts";
import type { Region, StreamLayer } from "./capture.ts";
import { CHECK, check } from "./checks.ts";
import { MalformedImageError, UnsupportedFormatError } from "./errors.ts";
import type { FormatModule, FormatReport, FormatSession } from "./format-module.ts";

export const QCOW2_MAGIC = asciiBytes("QFI\xfb");

export const QCOW2_OFFSET = {
  magic: 0,
  version: 4,
  backingFileOffset: 8,
  backingFileSize: 16,
  clusterBits: 20,
  size: 24,
  cryptMethod: 32,
  l1Size: 36,
  l1TableOffset: 40,
  refcountTableOffset: 48,
  refcountTableClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompatibleFeatures: 72,
  compatibleFeatures: 80,
  autoclearFeatures: 88,
  refcountOrder: 96,
  headerLength: 100,
  compressionType: 104,
} as const;

export const QCOW2_V2_HEADER_LENGTH = 72;
export const QCOW2_V3_MIN_HEADER_LENGTH = 104;
export const QCOW2_MIN_CLUSTER_BITS = 9;
export const QCOW2_MAX_CLUSTER_BITS = 21;
/** QEMU's QCOW_MAX_L1_SIZE and QCOW_MAX_REFTABLE_SIZE. */
export const QCOW2_MAX_L1_BYTES = 32 * MiB;
export const QCOW2_MAX_REFTABLE_BYTES = 8 * MiB;
/** QEMU's QCOW_MAX_SNAPSHOTS and the backing file name limit (bdrv's 1023 + NUL). */
export const QCOW2_MAX_SNAPSHOTS = 65536;
export const QCOW2_MAX_BACKING_NAME = 1023;

export const QCOW2_INCOMPAT = {
  dirty: 0n,
  corrupt: 1n,
  externalDataFile: 2n,
  compressionType: 3n,
  extendedL2: 4n,
} as const;
/** Incompatible bits QEMU 7.2 knows; any other bit means semantics we cannot vouch for. */
export const QCOW2_KNOWN_INCOMPAT_MASK = (1n << 5n) - 1n;

export const QCOW2_EXT = {
  end: 0x00000000,
  backingFormat: 0xe2792aca,
  featureTable: 0x6803f857,
  bitmaps: 0x23852875,
  fullDiskEncryption: 0x0537be77,
  externalDataFile: 0x44415441,
} as const;

export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: bigint;
  backingFileSize: number;
  clusterBits: number;
  clusterSize: number;
  size: bigint;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: bigint;
  refcountTableOffset: bigint;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: bigint;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
}

export interface Qcow2Extension {
  type: number;
  offset: number;
  data: Uint8Array;
}

const F = "qcow2";

/** Version, cluster size, header length and refcount order: what the rest of the header is read by. */
function readQcow2Geometry(bytes: Uint8Array, r: FieldReader) {
  if (!hasBytesAt(bytes, 0, QCOW2_MAGIC)) throw new MalformedImageError(F, "magic QFI\\xfb not found");
  const version = r.u32be(QCOW2_OFFSET.version, "version");
  if (version === 1) {
    throw new UnsupportedFormatError("qcow", "qcow (version 1) images are not supported; convert to qcow2");
  }
  if (version !== 2 && version !== 3) throw new MalformedImageError(F, `unsupported version ${version}`);
  const clusterBits = r.u32be(QCOW2_OFFSET.clusterBits, "cluster_bits");
  if (clusterBits < QCOW2_MIN_CLUSTER_BITS || clusterBits > QCOW2_MAX_CLUSTER_BITS) {
    throw new MalformedImageError(F, `cluster_bits ${clusterBits} outside ${QCOW2_MIN_CLUSTER_BITS}..21`);
  }
  const clusterSize = 2 ** clusterBits;
  const v3 = version === 3;
  const headerLength = v3 ? r.u32be(QCOW2_OFFSET.headerLength, "header_length") : QCOW2_V2_HEADER_LENGTH;
  if (v3 && (headerLength < QCOW2_V3_MIN_HEADER_LENGTH || headerLength > clusterSize || headerLength % 8)) {
    throw new MalformedImageError(F, `header_length ${headerLength} is invalid`);
  }
  r.need(0, headerLength, "header");
  const refcountOrder = v3 ? r.u32be(QCOW2_OFFSET.refcountOrder, "refcount_order") : 4;
  if (refcountOrder > 6) throw new MalformedImageError(F, `refcount_order ${refcountOrder} above 6`);
  return { version: version as 2 | 3, v3, clusterBits, clusterSize, headerLength, refcountOrder };
}

/** Refuses header fields outside what the spec defines or what the importer allows. */
function checkQcow2Header(header: Qcow2Header): void {
  const { clusterSize } = header;
  if (header.cryptMethod > 2) throw new MalformedImageError(F, `crypt_method ${header.cryptMethod} unknown`);
  if (header.compressionType > 1) {
    throw new MalformedImageError(F, `compression_type ${header.compressionType} unknown`);
  }
  if (header.l1Size > QCOW2_MAX_L1_BYTES / 8)
    throw new MalformedImageError(F, `l1_size ${header.l1Size} too large`);
  if (header.refcountTableClusters > QCOW2_MAX_REFTABLE_BYTES / clusterSize) {
    throw new MalformedImageError(F, `refcount_table_clusters ${header.refcountTableClusters} too large`);
  }
  if (header.nbSnapshots > QCOW2_MAX_SNAPSHOTS) {
    throw new MalformedImageError(F, `nb_snapshots ${header.nbSnapshots} too large`);
  }
  const backingOutside =
    header.backingFileOffset > BigInt(clusterSize) || header.backingFileSize > QCOW2_MAX_BACKING_NAME;
  if (header.backingFileOffset !== 0n && backingOutside) {
    throw new MalformedImageError(F, "backing file name lies outside the first cluster or is too long");
  }
  const l2Entries = BigInt(
    clusterSize / (hasBit(header.incompatibleFeatures, QCOW2_INCOMPAT.extendedL2) ? 16 : 8),
  );
  const bytesPerL1Entry = BigInt(clusterSize) * l2Entries;
  const l1Needed = (header.size + bytesPerL1Entry - 1n) / bytesPerL1Entry;
  if (l1Needed > BigInt(header.l1Size)) {
    throw new MalformedImageError(
      F,
      `L1 table has ${header.l1Size} entries, the virtual size needs ${l1Needed}`,
    );
  }
}

/** Parses and validates the fixed header (first 72 or `header_length` bytes). */
export function parseQcow2Header(bytes: Uint8Array): Qcow2Header {
  const r = new FieldReader(bytes, F);
  const { version, v3, clusterBits, clusterSize, headerLength, refcountOrder } = readQcow2Geometry(bytes, r);
  const header: Qcow2Header = {
    version,
    backingFileOffset: r.u64be(QCOW2_OFFSET.backingFileOffset, "backing_file_offset"),
    backingFileSize: r.u32be(QCOW2_OFFSET.backingFileSize, "backing_file_size"),
    clusterBits,
    clusterSize,
    size: r.u64be(QCOW2_OFFSET.size, "size"),
    cryptMethod: r.u32be(QCOW2_OFFSET.cryptMethod, "crypt_method"),
    l1Size: r.u32be(QCOW2_OFFSET.l1Size, "l1_size"),
    l1TableOffset: r.u64be(QCOW2_OFFSET.l1TableOffset, "l1_table_offset"),
    refcountTableOffset: r.u64be(QCOW2_OFFSET.refcountTableOffset, "refcount_table_offset"),
    refcountTableClusters: r.u32be(QCOW2_OFFSET.refcountTableClusters, "refcount_table_clusters"),
    nbSnapshots: r.u32be(QCOW2_OFFSET.nbSnapshots, "nb_snapshots"),
    snapshotsOffset: r.u64be(QCOW2_OFFSET.snapshotsOffset, "snapshots_offset"),
    incompatibleFeatures: v3 ? r.u64be(QCOW2_OFFSET.incompatibleFeatures, "incompatible_features") : 0n,
    compatibleFeatures: v3 ? r.u64be(QCOW2_OFFSET.compatibleFeatures, "compatible_features") : 0n,
    autoclearFeatures: v3 ? r.u64be(QCOW2_OFFSET.autoclearFeatures, "autoclear_features") : 0n,
    refcountOrder,
    headerLength,
    compressionType:
      headerLength > QCOW2_OFFSET.compressionType
        ? r.u8(QCOW2_OFFSET.compressionType, "compression_type")
        : 0,
  };
  checkQcow2Header(header);
  return header;
}

/** Where header extensions stop: the backing file name, or the end of the first cluster. */
export function qcow2ExtensionsEnd(header: Qcow2Header): number {
  return header.backingFileOffset !== 0n ? Number(header.backingFileOffset) : header.clusterSize;
}

/** Walks the header extensions in `area`, which holds the file from `areaOffset` on. */
export function parseQcow2Extensions(
  area: Uint8Array,
  areaOffset: number,
  header: Qcow2Header,
): Qcow2Extension[] {
  const r = new FieldReader(area, F);
  const end = qcow2ExtensionsEnd(header);
  const out: Qcow2Extension[] = [];
  let offset = header.headerLength;
  // Each extension is at least 8 bytes, so the loop ends within (end - headerLength) / 8 steps.
  while (offset + 8 <= end) {
    const type = r.u32be(offset - areaOffset, "extension type");
    const length = r.u32be(offset - areaOffset + 4, "extension length");
    if (type === QCOW2_EXT.end) return out;
    if (offset + 8 + length > end) {
      throw new MalformedImageError(F, `header extension 0x${type.toString(16)} overruns the first cluster`);
    }
    out.push({ type, offset, data: r.slice(offset - areaOffset + 8, length, "extension data") });
    offset += 8 + Math.ceil(length / 8) * 8;
  }
  return out;
}

function hasBit(features: bigint, bit: bigint): boolean {
  return ((features >> bit) & 1n) === 1n;
}

/** Where the inspector expects each table, for the bounds check (file offsets in bytes). */
function tableBoundsProblem(h: Qcow2Header, fileSize: number): string | undefined {
  const size = BigInt(fileSize);
  const cluster = BigInt(h.clusterSize);
  const tables: [string, bigint, bigint][] = [
    ["L1 table", h.l1TableOffset, BigInt(h.l1Size) * 8n],
    ["refcount table", h.refcountTableOffset, BigInt(h.refcountTableClusters) * cluster],
  ];
  if (h.nbSnapshots > 0) tables.push(["snapshot table", h.snapshotsOffset, 40n * BigInt(h.nbSnapshots)]);
  for (const [name, offset, length] of tables) {
    if (length === 0n && name !== "refcount table") continue;
    if (offset % cluster !== 0n) {
      return `the ${name} offset ${offset} is not aligned to the ${h.clusterSize}-byte cluster size`;
    }
    if (offset === 0n || offset + length > size) {
      return `the ${name} (offset ${offset}, ${length} bytes) lies outside the ${fileSize}-byte file`;
    }
  }
  return undefined;
}

class Qcow2Session implements FormatSession {
  private header: Qcow2Header | undefined;
  private extensions: Region | undefined;
  private backingName: Region | undefined;

  constructor(private readonly layer: StreamLayer) {}

  advance(): void {
    if (this.header !== undefined || this.layer.position < QCOW2_V3_MIN_HEADER_LENGTH + 8) return;
    const head = this.layer.head();
    if (!hasBytesAt(head, 0, QCOW2_MAGIC)) return;
    this.header = parseQcow2Header(head);
    const start = this.header.headerLength;
    this.extensions = this.layer.request(
      start,
      qcow2ExtensionsEnd(this.header) - start,
      F,
      "header extensions",
    );
    if (this.header.backingFileOffset !== 0n) {
      const length = Math.min(this.header.backingFileSize, QCOW2_MAX_BACKING_NAME);
      this.backingName = this.layer.request(
        Number(this.header.backingFileOffset),
        length,
        F,
        "backing file name",
      );
    }
  }

  report(): FormatReport {
    const h = this.header ?? parseQcow2Header(this.layer.head());
    const extRegion = this.extensions;
    // A file that ends inside its first cluster: QEMU reads the missing bytes as zeros, and so do we,
    // so an extension in the bytes that are there still counts.
    if (extRegion?.missed === true) throw new MalformedImageError(F, "header extensions are out of reach");
    const extensions =
      extRegion === undefined ? [] : parseQcow2Extensions(extRegion.zeroPadded(), extRegion.offset, h);
    const backingName = this.backingName?.complete === true ? latin1(this.backingName.data) : undefined;
    const dataFileExt = extensions.find((e) => e.type === QCOW2_EXT.externalDataFile);
    const unknownBits = h.incompatibleFeatures & ~QCOW2_KNOWN_INCOMPAT_MASK;
    const fileSize = this.layer.position;
    return {
      virtualSize: h.size,
      subformat: h.version === 2 ? "v2" : "v3",
      checks: [
        check(
          CHECK.qcow2BackingFile,
          h.backingFileOffset !== 0n
            ? `the image refers to another file (${backingName === undefined ? "name unreadable" : quoteForMessage(backingName)}); images that read other files are refused`
            : undefined,
        ),
        check(
          CHECK.qcow2DataFile,
          hasBit(h.incompatibleFeatures, QCOW2_INCOMPAT.externalDataFile) || dataFileExt !== undefined
            ? `the image keeps its data in another file (${dataFileExt === undefined ? "external data file bit set" : quoteForMessage(latin1(dataFileExt.data))}); images that read other files are refused`
            : undefined,
        ),
        check(
          CHECK.qcow2UnknownFeatures,
          unknownBits !== 0n
            ? `incompatible feature bits 0x${unknownBits.toString(16)} are unknown; their meaning cannot be checked`
            : undefined,
        ),
        check(CHECK.qcow2TableBounds, tableBoundsProblem(h, fileSize)),
      ],
    };
  }
}

/** qcow2 format module: magic at offset 0 (version 1 "qcow" is refused as unsupported). */
export const qcow2Format: FormatModule = {
  name: "qcow2",
  probe: (head) => hasBytesAt(head, 0, QCOW2_MAGIC),
  subformatFromProbe(head) {
    const r = new FieldReader(head, F);
    if (head.length < 8) return undefined;
    const version = r.u32be(QCOW2_OFFSET.version, "version");
    if (version === 1) {
      throw new UnsupportedFormatError("qcow", "qcow (version 1) images are not supported; convert to qcow2");
    }
    return version === 2 ? "v2" : version === 3 ? "v3" : undefined;
  },
  open: (layer) => new Qcow2Session(layer),
};
