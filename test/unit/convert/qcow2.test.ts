import { describe, expect, it } from "vitest";
import { convertToRaw } from "../../../functions/core/convert/index.ts";
import { digest, fileRange, fileSequential, guestWritten, makeImage, qemuRawSha256 } from "./helpers.ts";

const CASES: { name: string; options: string[]; extra?: string[] }[] = [
  { name: "v3-64k.qcow2", options: ["compat=1.1"] },
  { name: "v2-64k.qcow2", options: ["compat=0.10"] },
  { name: "v3-512.qcow2", options: ["compat=1.1", "cluster_size=512"] },
  { name: "v3-4k.qcow2", options: ["compat=1.1", "cluster_size=4096"] },
  { name: "v2-2m.qcow2", options: ["compat=0.10", "cluster_size=2M"] },
  { name: "v3-64k-c.qcow2", options: ["compat=1.1"], extra: ["-c"] },
  { name: "v2-4k-c.qcow2", options: ["compat=0.10", "cluster_size=4096"], extra: ["-c"] },
  { name: "v3-1m-c.qcow2", options: ["compat=1.1", "cluster_size=1M"], extra: ["-c"] },
  { name: "v3-64k-zstd.qcow2", options: ["compat=1.1", "compression_type=zstd"], extra: ["-c"] },
  {
    name: "v3-4k-zstd.qcow2",
    options: ["compat=1.1", "cluster_size=4096", "compression_type=zstd"],
    extra: ["-c"],
  },
  {
    name: "v3-2m-zstd.qcow2",
    options: ["compat=1.1", "cluster_size=2M", "compression_type=zstd"],
    extra: ["-c"],
  },
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

const K = 1024;
const M = K * K;

/**
 * Layouts no qemu-img conversion makes, written through each driver as a guest would: data stored
 * out of guest order, holes inside runs, zero-flagged clusters, a compressed cluster between data
 * clusters stored back to back, a partial last cluster. The table walks merge clusters into runs;
 * each of these must end one.
 */
const GUEST_WRITTEN: {
  name: string;
  format: "qcow2" | "vmdk";
  options: string[];
  size: number;
  commands: string[];
}[] = [
  {
    name: "guest-written.qcow2",
    format: "qcow2",
    options: ["compat=1.1"],
    size: 5 * M + 1536,
    commands: [
      `write -P 0x11 ${4 * M} ${M + 1536}`,
      `write -P 0x22 0 ${64 * K}`,
      `write -P 0x33 ${M} ${256 * K}`,
      `write -z ${192 * K} ${128 * K}`,
      `write -P 0x44 ${128 * K} ${64 * K}`,
      `write -c -P 0x55 ${2 * M} ${64 * K}`,
      `write -P 0x66 ${2 * M + 64 * K} ${128 * K}`,
      `discard ${M + 64 * K} ${64 * K}`,
      `write -P 0x77 ${64 * K} ${64 * K}`,
    ],
  },
  {
    name: "guest-written.vmdk",
    format: "vmdk",
    options: ["subformat=monolithicSparse", "zeroed_grain=on"],
    size: 40 * M,
    commands: [
      `write -P 0x11 ${36 * M} ${M}`,
      `write -P 0x22 0 ${64 * K}`,
      `write -P 0x33 ${M} ${256 * K}`,
      `write -z ${M + 64 * K} ${64 * K}`,
      `write -P 0x44 ${128 * K} ${64 * K}`,
      `write -P 0x66 ${32 * M - 64 * K} ${128 * K}`,
      `write -P 0x77 ${64 * K} ${64 * K}`,
    ],
  },
];

describe("images written by a guest", { timeout: 60_000 }, () => {
  for (const c of GUEST_WRITTEN) {
    it(`${c.name} converts as qemu-img does, in small windows and large`, async () => {
      const path = guestWritten(c.name, c.format, c.options, c.size, c.commands);
      const expected = qemuRawSha256(path, c.format);
      const range = await fileRange(path);
      try {
        for (const windowSize of [64 << 10, 8 << 20]) {
          expect(
            await digest(convertToRaw(c.format, { range }, { windowSize, chunkSize: 96 << 10 })),
          ).toEqual(expected);
        }
      } finally {
        await range.close();
      }
    });
  }
});
