import { describe, expect, it } from "vitest";
import { CHECK, detectFormat, UnsafeImageError } from "../../../functions/core/formats/index.ts";
import { detectPartitionTable } from "../../../functions/core/formats/raw.ts";
import { vhdxGuid } from "../../../functions/core/formats/vhdx.ts";
import { inspectBytes, inspectOrThrow } from "./helpers.ts";

function mbr(status: number, type: number): Uint8Array {
  const bytes = new Uint8Array(8192);
  bytes[446] = status;
  bytes[446 + 4] = type;
  bytes[510] = 0x55;
  bytes[511] = 0xaa;
  return bytes;
}

describe("partition tables on raw disks", () => {
  it("tells MBR from GPT, and a boot sector without a table from both", () => {
    expect(detectPartitionTable(mbr(0x80, 0x83))).toBe("mbr");
    const gpt = mbr(0x00, 0xee);
    gpt.set(new TextEncoder().encode("EFI PART"), 512);
    expect(detectPartitionTable(gpt)).toBe("gpt");
    const gpt4k = mbr(0x00, 0xee);
    gpt4k.set(new TextEncoder().encode("EFI PART"), 4096);
    expect(detectPartitionTable(gpt4k)).toBe("gpt");
    // A FAT boot sector also ends in 55 AA but has boot code where the entries would be.
    expect(detectPartitionTable(mbr(0x3c, 0x90))).toBeUndefined();
    expect(detectPartitionTable(mbr(0x00, 0x00))).toBeUndefined();
    expect(detectPartitionTable(new Uint8Array(100))).toBeUndefined();
  });
});

describe("edge sizes", () => {
  it("refuses an empty upload by its virtual size", async () => {
    const run = await inspectBytes(new Uint8Array(0), 1);
    expect(run.error).toBeInstanceOf(UnsafeImageError);
    expect((run.error as UnsafeImageError).check).toBe(CHECK.virtualSize);
  });

  it("rounds a raw disk up to whole sectors, as qemu-img does", async () => {
    expect((await inspectOrThrow(Uint8Array.of(1))).virtualSize).toBe(512);
    expect((await inspectOrThrow(new Uint8Array(513))).virtualSize).toBe(1024);
  });

  it("refuses a raw disk above the operator's limit", async () => {
    const run = await inspectBytes(new Uint8Array(4096), 4096, { maxVirtualSize: 2048 });
    expect((run.error as UnsafeImageError).check).toBe(CHECK.virtualSize);
    expect((run.error as Error).message).toContain("above the limit of 2048 bytes");
  });
});

describe("LUKS2", () => {
  it("is detected as luks with the whole stream as its size (QEMU 7.2 reads LUKS2 as raw)", async () => {
    const bytes = new Uint8Array(32 * 1024);
    bytes.set([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe, 0x00, 0x02]);
    const result = await inspectOrThrow(bytes);
    expect(result).toMatchObject({ format: "luks", subformat: "luks2", virtualSize: bytes.length });
    expect(detectFormat(bytes, bytes.subarray(-512), bytes.length)).toEqual({
      format: "luks",
      compression: "none",
      subformat: "luks2",
    });
  });
});

describe("vhdxGuid", () => {
  it("writes the first three GUID fields little-endian, as VHDX stores them", () => {
    expect(Buffer.from(vhdxGuid("2DC27766-F623-4200-9D64-115E9BFD4A08")).toString("hex")).toBe(
      "6677c22d23f600429d64115e9bfd4a08",
    );
  });
});
