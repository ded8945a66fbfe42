import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { runPipeline } from "../../../functions/core/import/pipeline.ts";
import { MemoryObjects } from "../fakes.ts";

const dir = mkdtempSync(join(tmpdir(), "hangar-spool-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");

/** A qcow2 whose four 1 MiB stretches were written back to front: host order is the reverse of guest order. */
function reversedQcow2(): { qcow2: Buffer; raw: Buffer } {
  const file = join(dir, "reversed.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", file, "4M"]);
  for (let i = 3; i >= 0; i--) {
    const piece = join(dir, `piece-${i}`);
    writeFileSync(piece, randomBytes(1024 * 1024));
    execFileSync("qemu-io", ["-f", "qcow2", "-c", `write -s ${piece} ${i}M 1M`, file], { stdio: "ignore" });
  }
  execFileSync("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", file, `${file}.raw`]);
  return { qcow2: readFileSync(file), raw: readFileSync(`${file}.raw`) };
}

describe("a gzip-wrapped image stored out of order", () => {
  it("is unwrapped into the spool, converted from it with ranged reads, and the spool is deleted", async () => {
    const { qcow2, raw } = reversedQcow2();
    const gz = gzipSync(qcow2);
    const objects = new MemoryObjects(64 * 1024);
    objects.objects.set("staging/x/upload", gz);
    const result = await runPipeline({
      key: "staging/x/upload",
      outputKey: "images/x",
      spoolKey: "spool/x",
      size: gz.length,
      declaredFormat: null,
      declaredSha256: true,
      osHashAlgo: "sha512",
      policy: {
        preferredFormat: "raw",
        acceptedFormats: ["raw", "iso"],
        maxVirtualSize: 2 ** 40,
        maxGzipRatio: 64,
      },
      objects,
      signal: new AbortController().signal,
      onProgress: () => {},
    });
    expect(result).toMatchObject({
      storedFormat: "raw",
      converted: true,
      spooled: true,
      storedSize: raw.length,
      uploadBytes: gz.length,
      stored: { md5: hex("md5", raw), sha512: hex("sha512", raw) },
      upload: { sha256: hex("sha256", gz) },
    });
    expect(hex("sha256", objects.objects.get("images/x") ?? new Uint8Array())).toBe(hex("sha256", raw));
    expect(objects.objects.has("spool/x")).toBe(false);
  });
});
