import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type ImportPolicy, runPipeline } from "../../../functions/core/import/pipeline.ts";
import { DEFAULT_IMPORT_POLICY } from "../../../functions/core/policy.ts";
import { MemoryObjects } from "../fakes.ts";

const dir = mkdtempSync(join(tmpdir(), "hangar-strategies-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");

/** Runs the pipeline on `upload`; counts the sequential reads of the upload and the bytes they fed. */
function run(
  upload: Uint8Array,
  options: { declaredFormat?: string | null; policy?: Partial<ImportPolicy> } = {},
) {
  const objects = new MemoryObjects(64 * 1024);
  objects.objects.set("staging/i/upload", upload);
  const reads: string[] = [];
  const read = objects.read.bind(objects);
  objects.read = (key: string) => {
    reads.push(key);
    return read(key);
  };
  let bytesRead = 0;
  const result = runPipeline({
    key: "staging/i/upload",
    outputKey: "images/i",
    spoolKey: "spool/i",
    size: upload.length,
    declaredFormat: options.declaredFormat ?? null,
    declaredSha256: true,
    osHashAlgo: "sha512",
    policy: { ...DEFAULT_IMPORT_POLICY, ...options.policy },
    objects,
    signal: new AbortController().signal,
    onProgress: (n) => {
      bytesRead = n;
    },
  });
  return { objects, reads, result, bytesRead: () => bytesRead };
}

const raw = () => {
  const bytes = new Uint8Array(1024 * 1024);
  bytes.set(randomBytes(4096), 8192);
  return bytes;
};

describe("pass through", () => {
  it("stores the bytes read, and the upload's sha256 comes from the same digester", async () => {
    const bytes = raw();
    const { objects, reads, result } = run(bytes);
    expect(await result).toMatchObject({
      storedFormat: "raw",
      converted: false,
      spooled: false,
      stored: { md5: hex("md5", bytes), sha512: hex("sha512", bytes), sha256: hex("sha256", bytes) },
      upload: { sha256: hex("sha256", bytes) },
    });
    expect(hex("sha256", objects.objects.get("images/i") ?? new Uint8Array())).toBe(hex("sha256", bytes));
    expect(reads).toEqual(["staging/i/upload"]);
  });
});

describe("refuse", () => {
  it("refuses a declared format the upload's ends contradict without reading its body", async () => {
    const { objects, reads, result } = run(raw(), { declaredFormat: "qcow2" });
    await expect(result).rejects.toMatchObject({ reason: "FORMAT_MISMATCH" });
    expect(reads).toEqual([]);
    expect(objects.objects.has("images/i")).toBe(false);
  });

  it("refuses a luks volume once the inspector has read all of it", async () => {
    const bytes = new Uint8Array(256 * 1024);
    bytes.set([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe, 0x00, 0x02]);
    const { objects, result, bytesRead } = run(bytes);
    await expect(result).rejects.toMatchObject({
      reason: "UNSUPPORTED_FORMAT",
      message: expect.stringContaining("luks-encrypted"),
    });
    expect(bytesRead()).toBe(bytes.length);
    expect(objects.objects.has("images/i")).toBe(false);
  });

  it("refuses a conversion to a format Hangar cannot write once the inspector has read the upload", async () => {
    const file = join(dir, "small.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", file, "4M"]);
    const qcow2 = readFileSync(file);
    const { objects, result, bytesRead } = run(qcow2, {
      policy: { preferredFormat: "vmdk", acceptedFormats: ["raw"] },
    });
    await expect(result).rejects.toMatchObject({
      reason: "UNSUPPORTED_FORMAT",
      message: expect.stringContaining("prefers vmdk"),
    });
    expect(bytesRead()).toBe(qcow2.length);
    expect(objects.objects.has("images/i")).toBe(false);
  });
});

describe("convert", () => {
  it("converts as it reads, once, and hashes the upload apart from what is stored", async () => {
    const source = join(dir, "c.raw");
    const bytes = raw();
    writeFileSync(source, bytes);
    execFileSync("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", source, `${source}.qcow2`]);
    const qcow2 = readFileSync(`${source}.qcow2`);
    const { objects, reads, result } = run(qcow2);
    expect(await result).toMatchObject({
      detected: { format: "qcow2" },
      storedFormat: "raw",
      converted: true,
      spooled: false,
      stored: { md5: hex("md5", bytes) },
      upload: { sha256: hex("sha256", qcow2) },
    });
    expect(hex("sha256", objects.objects.get("images/i") ?? new Uint8Array())).toBe(hex("sha256", bytes));
    expect(reads).toEqual(["staging/i/upload"]);
  });
});
