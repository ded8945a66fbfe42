import { execFileSync } from "node:child_process";
import { createWriteStream, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { describe, expect, it, onTestFinished } from "vitest";
import { convertToQcow2, type SourceFormat } from "../../../functions/core/convert/index.ts";
import type { RangeReader } from "../../../functions/core/convert/ports.ts";
import { baseRaw, FIXTURES, fileRange, makeImage, memoryRange, qcow2DataRanges, qemuImg } from "./helpers.ts";

const CASES: { name: string; format: SourceFormat; qemu: string; make: () => string }[] = [
  { name: "raw", format: "raw", qemu: "raw", make: baseRaw },
  {
    name: "qcow2-c",
    format: "qcow2",
    qemu: "qcow2",
    make: () => makeImage("v3-64k-c.qcow2", "qcow2", ["compat=1.1"], ["-c"]),
  },
  {
    name: "qcow2-4k",
    format: "qcow2",
    qemu: "qcow2",
    make: () => makeImage("v3-4k.qcow2", "qcow2", ["compat=1.1", "cluster_size=4096"]),
  },
  {
    name: "vmdk-stream",
    format: "vmdk",
    qemu: "vmdk",
    make: () => makeImage("stream.vmdk", "vmdk", ["subformat=streamOptimized"]),
  },
  {
    name: "vhd-dynamic",
    format: "vhd",
    qemu: "vpc",
    make: () => makeImage("dynamic.vhd", "vpc", ["subformat=dynamic"]),
  },
  {
    name: "vhdx",
    format: "vhdx",
    qemu: "vhdx",
    make: () => makeImage("dynamic.vhdx", "vhdx", ["subformat=dynamic", "block_size=1M"]),
  },
  { name: "vdi", format: "vdi", qemu: "vdi", make: () => makeImage("dynamic.vdi", "vdi") },
];

describe("→ qcow2 passes qemu-img check and compares equal", { timeout: 60_000 }, () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const src = c.make();
      const out = join(FIXTURES, `to-qcow2-${c.name}.${process.pid}.qcow2`);
      const range = await fileRange(src);
      try {
        await pipeline(convertToQcow2(c.format, { range }, { chunkSize: 1 << 20 }), createWriteStream(out));
      } finally {
        await range.close();
      }
      onTestFinished(() => rmSync(out, { force: true }));
      const check = JSON.parse(qemuImg("check", "--output=json", "-f", "qcow2", out)) as Record<
        string,
        unknown
      >;
      expect(check).toMatchObject({ "check-errors": 0 });
      expect(check.corruptions ?? 0).toBe(0);
      expect(check.leaks ?? 0).toBe(0);
      // Throws (exit status 1) when the guest contents differ.
      expect(qemuImg("compare", "-f", c.qemu, "-F", "qcow2", src, out)).toContain("identical");
      const info = JSON.parse(qemuImg("info", "--output=json", out)) as { "virtual-size": number };
      const srcInfo = JSON.parse(qemuImg("info", "--output=json", "-f", c.qemu, src)) as {
        "virtual-size": number;
      };
      expect(info["virtual-size"]).toBe(srcInfo["virtual-size"]);
    });
  }
});

describe("→ qcow2 leaves out clusters that hold only zeros, as qemu-img convert does", {
  timeout: 60_000,
}, () => {
  // A raw whose zeros are written (a raw has no allocation map), and a qcow2 whose allocated clusters
  // hold zeros (qemu-io writes them as data), each with a non-zero byte at the very end of one cluster.
  const sources: { name: string; format: SourceFormat; qemu: string; make: () => string }[] = [
    { name: "raw", format: "raw", qemu: "raw", make: baseRaw },
    {
      name: "qcow2 with allocated zeros",
      format: "qcow2",
      qemu: "qcow2",
      make: () => {
        const file = join(FIXTURES, `allocated-zeros.${process.pid}.qcow2`);
        qemuImg("create", "-q", "-f", "qcow2", file, "4M");
        execFileSync("qemu-io", ["-f", "qcow2", "-c", "write -P 0 0 2M", "-c", "write -P 7 3M 4k", file]);
        execFileSync("qemu-io", ["-f", "qcow2", "-c", `write -P 9 ${2 * 1024 * 1024 - 1} 1`, file]);
        onTestFinished(() => rmSync(file, { force: true }));
        return file;
      },
    },
  ];
  for (const c of sources) {
    it(c.name, async () => {
      const src = c.make();
      const ours = join(FIXTURES, `sparse-ours.${process.pid}.qcow2`);
      const whole = join(FIXTURES, `sparse-whole.${process.pid}.qcow2`);
      const reference = join(FIXTURES, `sparse-qemu.${process.pid}.qcow2`);
      onTestFinished(() => {
        for (const f of [ours, whole, reference]) rmSync(f, { force: true });
      });
      const range = await fileRange(src);
      try {
        await pipeline(convertToQcow2(c.format, { range }), createWriteStream(ours));
        await pipeline(convertToQcow2(c.format, { range }, { detectZeros: false }), createWriteStream(whole));
      } finally {
        await range.close();
      }
      qemuImg("convert", "-f", c.qemu, "-O", "qcow2", src, reference);
      expect(qemuImg("compare", "-f", c.qemu, "-F", "qcow2", src, ours)).toContain("identical");
      expect(qcow2DataRanges(ours)).toEqual(qcow2DataRanges(reference));
      // Without the scan, written zeros are stored: the comparison above has something to find.
      const wholeData = qcow2DataRanges(whole).reduce((n, [, l]) => n + l, 0);
      const oursData = qcow2DataRanges(ours).reduce((n, [, l]) => n + l, 0);
      expect(wholeData).toBeGreaterThan(oursData);
      expect(statSync(ours).size).toBeLessThan(statSync(whole).size);
    });
  }
});

describe("→ qcow2 of a sparse raw reads its data a second time, not its zeros", () => {
  it("reads the whole raw once to find the data, then only the clusters that hold it", async () => {
    const raw = new Uint8Array(16 * 1024 * 1024);
    raw.fill(0x11, 3 * 1024 * 1024, 3 * 1024 * 1024 + 100);
    raw.fill(0x22, 12 * 1024 * 1024 + 70_000, 12 * 1024 * 1024 + 70_001);
    const inner = memoryRange(raw);
    let bytesRead = 0;
    const range: RangeReader = {
      size: inner.size,
      read: (offset, length, signal, into) => {
        bytesRead += length;
        return inner.read(offset, length, signal, into);
      },
    };
    const out = join(FIXTURES, `sparse-reads.${process.pid}.qcow2`);
    const rawFile = join(FIXTURES, `sparse-reads.${process.pid}.raw`);
    onTestFinished(() => {
      rmSync(out, { force: true });
      rmSync(rawFile, { force: true });
    });
    await pipeline(convertToQcow2("raw", { range }), createWriteStream(out));
    writeFileSync(rawFile, raw);
    expect(qemuImg("compare", "-f", "raw", "-F", "qcow2", rawFile, out)).toContain("identical");
    // The scan reads 16 MiB; the second pass two 64 KiB clusters (one read each: they are far apart).
    expect(bytesRead).toBeGreaterThanOrEqual(raw.length);
    expect(bytesRead).toBeLessThanOrEqual(raw.length + 2 * 64 * 1024);
  });
});
