import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { DiskMap } from "../../../functions/core/convert/disk-map.ts";
import { pieces } from "../../../functions/core/convert/engine.ts";
import {
  convertRangeToRaw,
  convertToRaw,
  openDiskMap,
  type RangeReader,
  type SourceFormat,
} from "../../../functions/core/convert/index.ts";
import { sliceDiskMap } from "../../../functions/core/convert/range.ts";
import { FIXTURES, fileRange, guestWritten, qemuImg, qemuRawSha256 } from "./helpers.ts";

const K = 1024;
const M = K * K;
const G = K * M;

/** Guest writes over 80 MiB that cross table bounds: qcow2 L2 (2 MiB here), vmdk grain table (32 MiB). */
const WIDE_SIZE = 80 * M;
const WIDE_WRITES = [
  `write -P 0x11 0 ${64 * K}`,
  `write -P 0x22 ${31 * M + 512 * K} ${M}`,
  `write -P 0x33 ${40 * M} ${4 * K}`,
  `write -P 0x44 ${70 * M + 512} ${3 * M}`,
  `write -P 0x55 ${WIDE_SIZE - 64 * K} ${64 * K}`,
];

/** `source` (a guest-written qcow2) converted by qemu-img to another format (cached). */
function converted(name: string, source: string, format: string, options: string[], extra: string[] = []) {
  const path = join(FIXTURES, name);
  if (!existsSync(path)) {
    const tmp = `${path}.${process.pid}.tmp`;
    qemuImg("convert", "-f", "qcow2", "-O", format, "-o", options.join(","), ...extra, source, tmp);
    renameSync(tmp, path);
  }
  return path;
}

const wideQcow2 = () => guestWritten("wide.qcow2", "qcow2", ["cluster_size=4096"], WIDE_SIZE, WIDE_WRITES);

const WIDE: { name: string; format: SourceFormat; qemu: string; make: () => string }[] = [
  { name: "wide.qcow2", format: "qcow2", qemu: "qcow2", make: wideQcow2 },
  {
    name: "wide-c.qcow2",
    format: "qcow2",
    qemu: "qcow2",
    make: () => converted("wide-c.qcow2", wideQcow2(), "qcow2", ["cluster_size=4096"], ["-c"]),
  },
  {
    name: "wide-zstd.qcow2",
    format: "qcow2",
    qemu: "qcow2",
    make: () =>
      converted(
        "wide-zstd.qcow2",
        wideQcow2(),
        "qcow2",
        ["cluster_size=4096", "compression_type=zstd"],
        ["-c"],
      ),
  },
  {
    name: "wide.vmdk",
    format: "vmdk",
    qemu: "vmdk",
    make: () => guestWritten("wide.vmdk", "vmdk", ["subformat=monolithicSparse"], WIDE_SIZE, WIDE_WRITES),
  },
  {
    name: "wide-stream.vmdk",
    format: "vmdk",
    qemu: "vmdk",
    make: () => converted("wide-stream.vmdk", wideQcow2(), "vmdk", ["subformat=streamOptimized"]),
  },
  {
    name: "wide.vhd",
    format: "vhd",
    qemu: "vpc",
    make: () => guestWritten("wide.vhd", "vpc", ["subformat=dynamic"], WIDE_SIZE, WIDE_WRITES),
  },
  {
    name: "wide.vhdx",
    format: "vhdx",
    qemu: "vhdx",
    make: () =>
      guestWritten("wide.vhdx", "vhdx", ["subformat=dynamic", "block_size=1M"], WIDE_SIZE, WIDE_WRITES),
  },
  {
    name: "wide.vdi",
    format: "vdi",
    qemu: "vdi",
    make: () => guestWritten("wide.vdi", "vdi", ["static=off"], WIDE_SIZE, WIDE_WRITES),
  },
];

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(new Uint8Array(c));
  return Buffer.concat(parts);
}

describe("ranges that start past the first table seek and match", { timeout: 120_000 }, () => {
  for (const c of WIDE) {
    it(`${c.name}: ranges across table bounds give qemu-img's output`, async () => {
      const path = c.make();
      qemuRawSha256(path, c.qemu);
      const expected = readFileSync(`${path}.qemu.raw`);
      const size = expected.length;
      const points = [0, 31 * M + 5, 33 * M - 1, 40 * M + 4096 + 3, 64 * M, 71 * M + 100, size - 1, size];
      const range = await fileRange(path);
      try {
        const map = await openDiskMap(c.format, range);
        expect(map.seekUnit).toBeGreaterThan(0);
        expect(Buffer.compare(await collect(convertToRaw(c.format, { range })), expected)).toBe(0);
        for (let i = 0; i + 1 < points.length; i++) {
          const start = points[i] as number;
          const end = points[i + 1] as number;
          const out = await collect(convertRangeToRaw(c.format, { range }, { start, end }, { chunkSize: M }));
          expect(Buffer.compare(out, expected.subarray(start, end)), `[${start}, ${end})`).toBe(0);
        }
      } finally {
        await range.close();
      }
    });

    it(`${c.name}: a range in the middle reads fewer table bytes than a walk to it`, async () => {
      const file = await fileRange(c.make());
      try {
        const [start, end] = [71 * M + 100, 71 * M + 200];
        const read: Record<string, { reads: number; bytes: number }> = {};
        for (const seek of [false, true]) {
          const { reader, reads } = recording(file);
          const map = await openDiskMap(c.format, reader);
          const opened = reads.length;
          let at = 0;
          for await (const p of pieces(sliceDiskMap(seek ? map : walking(map), start, end), reader))
            at += p.length;
          expect(at).toBe(end - start);
          const after = reads.slice(opened);
          read[String(seek)] = { reads: after.length, bytes: after.reduce((n, r) => n + r.length, 0) };
        }
        const [walk, seek] = [read.false, read.true] as { reads: number; bytes: number }[];
        expect(seek?.reads).toBeLessThanOrEqual(walk?.reads as number);
        // A vhdx whose BAT precedes its metadata region has read the whole BAT when opened.
        if (c.format === "vhdx") expect(seek?.bytes).toBeLessThanOrEqual(walk?.bytes as number);
        else expect(seek?.bytes).toBeLessThan(walk?.bytes as number);
      } finally {
        await file.close();
      }
    });
  }
});

/** A RangeReader that records every read. */
function recording(inner: RangeReader) {
  const reads: { offset: number; length: number }[] = [];
  const reader: RangeReader = {
    size: inner.size,
    read(offset, length, signal, into) {
      reads.push({ offset, length });
      return inner.read(offset, length, signal, into);
    },
  };
  return { reader, reads };
}

/** The same map without its seek: walked from guest 0, as any map was before seeking. */
const walking = (map: DiskMap): DiskMap => ({
  format: map.format,
  virtualSize: map.virtualSize,
  batches: (signal) => map.batches(signal),
});

/**
 * A 64 GiB qcow2 (64 KiB clusters: one L2 table per 512 MiB, 128 of them) with 4 KiB of data in
 * every 512 MiB, so that every L2 table exists.
 */
const BIG_SIZE = 64 * G;
const L2_COVER = 512 * M;
const pattern = (k: number) => (k % 250) + 1;
function bigQcow2(): string {
  const path = join(FIXTURES, "big-64g.qcow2");
  if (existsSync(path)) return path;
  const tmp = `${path}.${process.pid}.tmp`;
  qemuImg("create", "-f", "qcow2", tmp, String(BIG_SIZE));
  const writes = Array.from({ length: BIG_SIZE / L2_COVER }, (_, k) => [
    "-c",
    `write -P ${pattern(k)} ${k * L2_COVER + M} ${4 * K}`,
  ]).flat();
  execFileSync("qemu-io", ["-f", "qcow2", ...writes, tmp], { stdio: "ignore" });
  renameSync(tmp, path);
  return path;
}

/** The L1 table's host offset, and the host offsets of the L2 tables by L1 index (0 when absent). */
function l2Tables(path: string): { l1Offset: number; tables: number[] } {
  const file = readFileSync(path);
  const l1Size = file.readUInt32BE(36);
  const l1Offset = Number(file.readBigUInt64BE(40));
  const tables = Array.from({ length: l1Size }, (_, i) =>
    Number(file.readBigUInt64BE(l1Offset + i * 8) & 0x00fffffffffffe00n),
  );
  return { l1Offset, tables };
}

interface ReadCount {
  reads: number;
  /** L1 indexes of the L2 tables read, in order. */
  l2: number[];
  /** Reads of the L1 table. */
  l1: { offset: number; length: number }[];
  bytes: number;
}

/** Drains `[start, end)` of `map` through the engine; checks each data byte against the written pattern. */
async function drainChecked(map: DiskMap, data: RangeReader, start: number, end: number): Promise<number> {
  let at = start;
  let nonZero = 0;
  for await (const p of pieces(sliceDiskMap(map, start, end), data)) {
    if (p.bytes) {
      for (let i = 0; i < p.length; i++) {
        const guest = at + i;
        const inData = guest % L2_COVER >= M && guest % L2_COVER < M + 4 * K;
        const want = inData ? pattern(Math.floor(guest / L2_COVER)) : 0;
        if (p.bytes[i] !== want) throw new Error(`byte at ${guest} is ${p.bytes[i]}, expected ${want}`);
        if (want) nonZero++;
      }
    }
    at += p.length;
  }
  expect(at).toBe(end);
  return nonZero;
}

describe("a late range of a large qcow2 reads no L2 table before it", { timeout: 120_000 }, () => {
  it("64 GiB, range in the last eighth: only the L2 tables covering it", async () => {
    const path = bigQcow2();
    const { l1Offset, tables } = l2Tables(path);
    expect(tables.filter((t) => t !== 0)).toHaveLength(BIG_SIZE / L2_COVER);
    const file = await fileRange(path);
    try {
      const start = 60 * G + 3;
      const end = 61 * G + 2 * M - 7;
      const first = Math.floor(start / L2_COVER);
      const last = Math.floor((end - 1) / L2_COVER);
      const counts: Record<string, ReadCount> = {};
      for (const [name, seek] of [
        ["walk", false],
        ["seek", true],
      ] as const) {
        const { reader, reads } = recording(file);
        const map = await openDiskMap("qcow2", reader);
        // Every table covering the range holds 4 KiB of data at 1 MiB into its 512 MiB.
        expect(await drainChecked(seek ? map : walking(map), reader, start, end)).toBe(
          (last - first + 1) * 4 * K,
        );
        const l2 = reads.map((r) => tables.indexOf(r.offset)).filter((i) => i >= 0);
        const l1 = reads.filter((r) => r.offset >= l1Offset && r.offset < l1Offset + tables.length * 8);
        counts[name] = { reads: reads.length, l2, l1, bytes: reads.reduce((n, r) => n + r.length, 0) };
      }
      const { walk, seek } = counts as Record<"walk" | "seek", ReadCount>;
      // The L1 entries read: all of them, or only those of the tables covering the range.
      expect(walk.l1).toEqual([{ offset: l1Offset, length: tables.length * 8 }]);
      expect(seek.l1).toEqual([{ offset: l1Offset + first * 8, length: (last - first + 1) * 8 }]);
      // Before: every L2 table up to the range's last was read; after: only those covering it.
      expect(walk.l2).toEqual(Array.from({ length: last + 1 }, (_, i) => i));
      expect(seek.l2).toEqual(Array.from({ length: last - first + 1 }, (_, i) => first + i));
      expect(seek.reads).toBe(walk.reads - first);
      console.info(
        `late range of a 64 GiB qcow2: walk ${walk.reads} reads (${walk.l2.length} L2 tables, ${walk.bytes} bytes), ` +
          `seek ${seek.reads} reads (${seek.l2.length} L2 tables, ${seek.bytes} bytes)`,
      );
    } finally {
      await file.close();
    }
  });
});
