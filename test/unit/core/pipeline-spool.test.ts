import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { type ImportPolicy, runPipeline } from "../../../functions/core/import/pipeline.ts";
import { DEFAULT_IMPORT_POLICY } from "../../../functions/core/policy.ts";
import { MemoryObjects } from "../fakes.ts";

const dir = mkdtempSync(join(tmpdir(), "hangar-spool-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");

/**
 * Runs the pipeline on `upload`, staged in memory as image `id`, under the default policy changed by
 * `policy`; the outputs are in `objects`.
 */
function pipelineOn(
  id: string,
  upload: Uint8Array,
  options: { declaredFormat?: string | null; declaredSha256?: boolean; policy?: Partial<ImportPolicy> } = {},
) {
  const objects = new MemoryObjects(64 * 1024);
  objects.objects.set(`staging/${id}/upload`, upload);
  const result = runPipeline({
    key: `staging/${id}/upload`,
    outputKey: `images/${id}`,
    spoolKey: `spool/${id}`,
    size: upload.length,
    declaredFormat: options.declaredFormat ?? null,
    declaredSha256: options.declaredSha256 ?? false,
    osHashAlgo: "sha512",
    policy: { ...DEFAULT_IMPORT_POLICY, ...options.policy },
    objects,
    signal: new AbortController().signal,
    onProgress: () => {},
  });
  return { objects, result };
}

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
    const { objects, result } = pipelineOn("x", gz, { declaredSha256: true });
    expect(await result).toMatchObject({
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

describe("a gzip-wrapped image when the operator prefers qcow2", () => {
  it("is unwrapped into the spool first, since conversion to qcow2 reads its source twice", async () => {
    const raw = Buffer.alloc(3 * 1024 * 1024);
    randomBytes(200_000).copy(raw, 1024 * 1024 + 512);
    const gz = gzipSync(raw);
    const { objects, result } = pipelineOn("y", gz, {
      policy: { preferredFormat: "qcow2", acceptedFormats: ["qcow2"] },
    });
    const outcome = await result;
    const stored = objects.objects.get("images/y") ?? new Uint8Array();
    expect(outcome).toMatchObject({
      storedFormat: "qcow2",
      converted: true,
      spooled: true,
      storedSize: stored.length,
      stored: { md5: hex("md5", stored), sha512: hex("sha512", stored) },
    });
    expect(objects.objects.has("spool/y")).toBe(false);
    const file = join(dir, "y.qcow2");
    writeFileSync(file, stored);
    writeFileSync(join(dir, "y.raw"), raw);
    execFileSync("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", join(dir, "y.raw"), file]);
    // Only the clusters holding the random bytes are stored: four 64 KiB clusters and the metadata.
    expect(stored.length).toBeLessThan(12 * 64 * 1024);
  });
});

describe("a gzip-wrapped fixed vhd, whose footer only the unwrapped end shows", () => {
  const fixedVhd = () => {
    const raw = Buffer.alloc(2 * 1024 * 1024);
    randomBytes(300_000).copy(raw, 4096);
    writeFileSync(join(dir, "f.raw"), raw);
    execFileSync("qemu-img", [
      "convert",
      "-f",
      "raw",
      "-O",
      "vpc",
      "-o",
      "subformat=fixed",
      join(dir, "f.raw"),
      join(dir, "f.vhd"),
    ]);
    execFileSync("qemu-img", [
      "convert",
      "-f",
      "vpc",
      "-O",
      "raw",
      join(dir, "f.vhd"),
      join(dir, "f.vhd.raw"),
    ]);
    return { vhd: readFileSync(join(dir, "f.vhd")), expected: readFileSync(join(dir, "f.vhd.raw")) };
  };
  const run = (gz: Uint8Array, declaredFormat: string | null, acceptedFormats = ["raw", "iso"]) =>
    pipelineOn("v", gz, { declaredFormat, policy: { acceptedFormats } });

  it("is found out at the end of the stream and converted through the spool", async () => {
    const { vhd, expected } = fixedVhd();
    for (const declared of [null, "vhd"]) {
      const { objects, result } = run(gzipSync(vhd), declared);
      expect(await result).toMatchObject({
        detected: { format: "vhd", compression: "gzip" },
        storedFormat: "raw",
        spooled: true,
        storedSize: expected.length,
        stored: { md5: hex("md5", expected), sha512: hex("sha512", expected) },
      });
      expect(hex("sha256", objects.objects.get("images/v") ?? new Uint8Array())).toBe(
        hex("sha256", expected),
      );
      expect(objects.objects.has("spool/v")).toBe(false);
    }
  });

  it("is stored unwrapped, footer and all, when the operator accepts vhd", async () => {
    const { vhd } = fixedVhd();
    const { objects, result } = run(gzipSync(vhd), null, ["raw", "vhd"]);
    expect(await result).toMatchObject({ storedFormat: "vhd", stored: { md5: hex("md5", vhd) } });
    expect(hex("sha256", objects.objects.get("images/v") ?? new Uint8Array())).toBe(hex("sha256", vhd));
  });

  it("is refused as FORMAT_MISMATCH when declared as another format, and so is a raw declared as vhd", async () => {
    const { vhd } = fixedVhd();
    await expect(run(gzipSync(vhd), "qcow2").result).rejects.toMatchObject({ reason: "FORMAT_MISMATCH" });
    const raw = Buffer.alloc(1024 * 1024);
    randomBytes(1000).copy(raw, 0);
    await expect(run(gzipSync(raw), "vhd").result).rejects.toMatchObject({ reason: "FORMAT_MISMATCH" });
  });
});
