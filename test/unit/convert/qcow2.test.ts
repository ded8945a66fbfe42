import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { convertToRaw } from "../../../functions/core/convert/index.ts";
import { digest, FIXTURES, fileRange, fileSequential, makeImage, qemuImg, qemuRawSha256 } from "./helpers.ts";

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

/**
 * A layout no qemu-img conversion makes, written through the qcow2 driver as a guest would: data
 * stored out of guest order, a hole punched inside a run, zero-flagged clusters, a compressed cluster
 * between data clusters stored back to back, and a partial last cluster. The L2 walk merges clusters
 * into runs; each of these must end one.
 */
function guestWrittenQcow2(): string {
  const path = join(FIXTURES, "guest-written.qcow2");
  if (existsSync(path)) return path;
  mkdirSync(FIXTURES, { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  const K = 1024;
  const M = K * K;
  qemuImg("create", "-f", "qcow2", "-o", "compat=1.1", tmp, String(5 * M + 1536));
  const commands = [
    `write -P 0x11 ${4 * M} ${M + 1536}`,
    `write -P 0x22 0 ${64 * K}`,
    `write -P 0x33 ${M} ${256 * K}`,
    `write -z ${192 * K} ${128 * K}`,
    `write -P 0x44 ${128 * K} ${64 * K}`,
    `write -c -P 0x55 ${2 * M} ${64 * K}`,
    `write -P 0x66 ${2 * M + 64 * K} ${128 * K}`,
    `discard ${M + 64 * K} ${64 * K}`,
    `write -P 0x77 ${64 * K} ${64 * K}`,
  ];
  execFileSync("qemu-io", ["-f", "qcow2", ...commands.flatMap((c) => ["-c", c]), tmp], { stdio: "ignore" });
  renameSync(tmp, path);
  return path;
}

describe("qcow2 written by a guest", { timeout: 60_000 }, () => {
  it("converts as qemu-img does, in small windows and large", async () => {
    const path = guestWrittenQcow2();
    const expected = qemuRawSha256(path, "qcow2");
    const range = await fileRange(path);
    try {
      for (const windowSize of [64 << 10, 8 << 20]) {
        expect(await digest(convertToRaw("qcow2", { range }, { windowSize, chunkSize: 96 << 10 }))).toEqual(
          expected,
        );
      }
    } finally {
      await range.close();
    }
  });
});
