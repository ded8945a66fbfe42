import { createWriteStream, rmSync } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { describe, expect, it, onTestFinished } from "vitest";
import { convertToQcow2, type SourceFormat } from "../../../functions/core/convert/index.ts";
import { baseRaw, FIXTURES, fileRange, makeImage, qemuImg } from "./helpers.ts";

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
