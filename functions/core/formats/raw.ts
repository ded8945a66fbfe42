/**
 * raw: the fallback when no other format matches. A raw disk may start with a partition table,
 * which is reported (not checked): MBR (boot signature 0x55AA at 510 with plausible entries) or GPT
 * ("EFI PART" at LBA 1, for 512-byte or 4 KiB sectors).
 */
import { asciiBytes, hasBytesAt } from "./bytes.ts";
import type { PartitionTable } from "./types.ts";

export const MBR_SIGNATURE_OFFSET = 510;
export const MBR_PARTITION_TABLE_OFFSET = 446;
export const MBR_PARTITION_ENTRY_SIZE = 16;
export const MBR_PARTITION_TYPE_GPT_PROTECTIVE = 0xee;
export const GPT_SIGNATURE = asciiBytes("EFI PART");
export const GPT_HEADER_OFFSETS = [512, 4096] as const;

/** The partition table kind at the start of a disk, if any. */
export function detectPartitionTable(head: Uint8Array): PartitionTable | undefined {
  if (GPT_HEADER_OFFSETS.some((offset) => hasBytesAt(head, offset, GPT_SIGNATURE))) return "gpt";
  if (head.length < MBR_SIGNATURE_OFFSET + 2) return undefined;
  if (head[MBR_SIGNATURE_OFFSET] !== 0x55 || head[MBR_SIGNATURE_OFFSET + 1] !== 0xaa) return undefined;
  let used = 0;
  for (let i = 0; i < 4; i++) {
    const entry = MBR_PARTITION_TABLE_OFFSET + i * MBR_PARTITION_ENTRY_SIZE;
    const status = head[entry];
    // A boot sector without a partition table (a FAT volume) has code here, not 0x00/0x80.
    if (status !== 0x00 && status !== 0x80) return undefined;
    if (head[entry + 4] !== 0) used++;
  }
  return used > 0 ? "mbr" : undefined;
}

/** QEMU sizes a raw file in whole 512-byte sectors, rounding a partial last sector up. */
export function rawVirtualSize(length: number): bigint {
  return ((BigInt(length) + 511n) / 512n) * 512n;
}
