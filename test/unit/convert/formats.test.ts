import { describe, expect, it } from "vitest";
import { convertToRaw, type SourceFormat } from "../../../functions/core/convert/index.ts";
import { digest, fileRange, fileSequential, makeImage, qemuRawSha256 } from "./helpers.ts";

const CASES: { name: string; format: SourceFormat; qemu: string; options?: string[] }[] = [
  { name: "sparse.vmdk", format: "vmdk", qemu: "vmdk", options: ["subformat=monolithicSparse"] },
  {
    name: "sparse-4k.vmdk",
    format: "vmdk",
    qemu: "vmdk",
    options: ["subformat=monolithicSparse", "zeroed_grain=on"],
  },
  { name: "stream.vmdk", format: "vmdk", qemu: "vmdk", options: ["subformat=streamOptimized"] },
  { name: "dynamic.vhd", format: "vhd", qemu: "vpc", options: ["subformat=dynamic"] },
  { name: "dynamic-force.vhd", format: "vhd", qemu: "vpc", options: ["subformat=dynamic", "force_size=on"] },
  { name: "fixed.vhd", format: "vhd", qemu: "vpc", options: ["subformat=fixed"] },
  { name: "fixed-force.vhd", format: "vhd", qemu: "vpc", options: ["subformat=fixed", "force_size=on"] },
  { name: "dynamic.vhdx", format: "vhdx", qemu: "vhdx", options: ["subformat=dynamic", "block_size=1M"] },
  { name: "dynamic-32m.vhdx", format: "vhdx", qemu: "vhdx", options: ["subformat=dynamic"] },
  { name: "fixed.vhdx", format: "vhdx", qemu: "vhdx", options: ["subformat=fixed"] },
  { name: "dynamic.vdi", format: "vdi", qemu: "vdi" },
  { name: "static.vdi", format: "vdi", qemu: "vdi", options: ["static=on"] },
];

describe("→ raw matches qemu-img", { timeout: 60_000 }, () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const path = makeImage(c.name, c.qemu, c.options);
      const expected = qemuRawSha256(path, c.qemu);
      const range = await fileRange(path);
      try {
        expect(await digest(convertToRaw(c.format, { range }))).toEqual(expected);
        expect(
          await digest(
            convertToRaw(
              c.format,
              { range, sequential: fileSequential(path, 300_000) },
              { chunkSize: 1 << 20 },
            ),
          ),
        ).toEqual(expected);
      } finally {
        await range.close();
      }
    });
  }
});
