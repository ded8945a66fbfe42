import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** `disk` written to `dir` as disk.raw and converted by qemu-img to disk.qcow2; the qcow2's bytes. */
export function qcow2Of(disk: Uint8Array, dir: string): Buffer {
  writeFileSync(join(dir, "disk.raw"), disk);
  execFileSync("qemu-img", [
    "convert",
    "-f",
    "raw",
    "-O",
    "qcow2",
    join(dir, "disk.raw"),
    join(dir, "disk.qcow2"),
  ]);
  return readFileSync(join(dir, "disk.qcow2"));
}
