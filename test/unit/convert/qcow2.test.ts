import { describe, expect, it } from "vitest";
import { convertToRaw } from "../../../functions/core/convert/index.ts";
import { digest, fileRange, fileSequential, makeImage, qemuRawSha256 } from "./helpers.ts";

const CASES: { name: string; options: string[]; extra?: string[] }[] = [
  { name: "v3-64k.qcow2", options: ["compat=1.1"] },
  { name: "v2-64k.qcow2", options: ["compat=0.10"] },
  { name: "v3-512.qcow2", options: ["compat=1.1", "cluster_size=512"] },
  { name: "v3-4k.qcow2", options: ["compat=1.1", "cluster_size=4096"] },
  { name: "v2-2m.qcow2", options: ["compat=0.10", "cluster_size=2M"] },
  { name: "v3-64k-c.qcow2", options: ["compat=1.1"], extra: ["-c"] },
  { name: "v2-4k-c.qcow2", options: ["compat=0.10", "cluster_size=4096"], extra: ["-c"] },
  { name: "v3-1m-c.qcow2", options: ["compat=1.1", "cluster_size=1M"], extra: ["-c"] },
];

describe("qcow2 → raw matches qemu-img", { timeout: 60_000 }, () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const path = makeImage(c.name, "qcow2", c.options, c.extra);
      const expected = qemuRawSha256(path, "qcow2");
      const range = await fileRange(path);
      try {
        expect(await digest(convertToRaw("qcow2", { range }))).toEqual(expected);
        expect(
          await digest(convertToRaw("qcow2", { range, sequential: fileSequential(path, 100_000) })),
        ).toEqual(expected);
        expect(await digest(convertToRaw("qcow2", { sequential: fileSequential(path) }))).toEqual(expected);
      } finally {
        await range.close();
      }
    });
  }
});
