import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "vitest";
import { storedObject } from "./objects.ts";
import { api, getStack, uploadThroughLink, waitForStatus } from "./stack.ts";

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

/**
 * Uploads the qcow2 at `qcow2` through a new image's link (as alice) and waits for it to be active:
 * it must be stored as raw with the size and digests of `raw` (qemu-img's raw of it), and its stored
 * object must hold the same guest bytes (`qemu-img compare`, through a file in `dir`). The image's id.
 */
export async function importedAsRaw(
  qcow2: string,
  raw: Uint8Array,
  dir: string,
  name: string,
): Promise<string> {
  const res = await api(
    "/v2/images",
    { method: "POST", body: JSON.stringify({ name, disk_format: "qcow2", container_format: "bare" }) },
    getStack().tokens.alice,
  );
  const { id } = await uploadThroughLink(res, readFileSync(qcow2));
  const image = await waitForStatus(id, "active", getStack().tokens.alice, 45_000);
  const hex = (algo: string) => createHash(algo).update(raw).digest("hex");
  expect(image).toMatchObject({
    disk_format: "raw",
    converted: true,
    size: raw.length,
    checksum: hex("md5"),
    os_hash_value: hex("sha512"),
  });
  const file = join(dir, `${id}.raw`);
  writeFileSync(file, await storedObject(`images/${id}`));
  // Exits 0 only when the guest contents are identical.
  execFileSync("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", file, qcow2], { stdio: "ignore" });
  return id;
}
