import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildIso } from "../fixtures/generate-tools.ts";
import { api, getStack, s3Client, uploadThroughLink, waitForStatus } from "./setup/stack.ts";

const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");
const qemuImg = (...args: string[]) => execFileSync("qemu-img", args, { stdio: ["ignore", "pipe", "pipe"] });

let dir: string;
let source: string;

/** A small disk with data, holes and a repeated pattern, so conversions exercise every kind of cluster. */
function makeSourceRaw(path: string): void {
  const disk = Buffer.alloc(6 * 1024 * 1024);
  randomBytes(700 * 1024).copy(disk, 64 * 1024);
  randomBytes(300 * 1024).copy(disk, 3 * 1024 * 1024 + 4096);
  disk.fill(0xab, 5 * 1024 * 1024, 5 * 1024 * 1024 + 65536);
  writeFileSync(path, disk);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "hangar-convert-"));
  source = join(dir, "source.raw");
  makeSourceRaw(source);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function upload(bytes: Uint8Array, body: Record<string, unknown>) {
  const res = await api(
    "/v2/images",
    { method: "POST", body: JSON.stringify(body) },
    getStack().tokens.alice,
  );
  return (await uploadThroughLink(res, bytes)).id;
}

async function storedBytes(id: string): Promise<Uint8Array> {
  const out = await s3Client().send(new GetObjectCommand({ Bucket: getStack().bucket, Key: `images/${id}` }));
  return (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray();
}

/** What qemu-img, the reference, makes of a file as raw. */
function referenceRaw(file: string, format?: string): Buffer {
  const out = join(dir, `${Math.random().toString(36).slice(2)}.raw`);
  // Named explicitly: qemu-img's probe takes a fixed VHD (no header at the start) for raw.
  qemuImg("convert", ...(format ? ["-f", format] : []), "-O", "raw", file, out);
  return readFileSync(out);
}

const CASES: [string, string, string[]][] = [
  ["qcow2 (v3)", "qcow2", ["-O", "qcow2"]],
  ["qcow2 v2, compressed clusters", "qcow2", ["-O", "qcow2", "-c", "-o", "compat=0.10"]],
  ["qcow2, zstd-compressed clusters", "qcow2", ["-O", "qcow2", "-c", "-o", "compression_type=zstd"]],
  ["vmdk monolithicSparse", "vmdk", ["-O", "vmdk"]],
  ["vmdk streamOptimized", "vmdk", ["-O", "vmdk", "-o", "subformat=streamOptimized"]],
  ["vhd dynamic", "vhd", ["-O", "vpc"]],
  ["vhd fixed", "vhd", ["-O", "vpc", "-o", "subformat=fixed"]],
  ["vhdx", "vhdx", ["-O", "vhdx"]],
  ["vdi", "vdi", ["-O", "vdi"]],
];

describe("uploads in other formats are converted to the preferred raw", () => {
  for (const [label, diskFormat, args] of CASES) {
    it(`${label} ends active as raw with the digests of qemu-img's raw`, async () => {
      const file = join(dir, `${label.replace(/\W+/g, "-")}.img`);
      qemuImg("convert", "-f", "raw", ...args, source, file);
      const bytes = readFileSync(file);
      const expected = referenceRaw(file, diskFormat === "vhd" ? "vpc" : diskFormat);
      const id = await upload(bytes, {
        name: label,
        disk_format: diskFormat,
        upload_sha256: hex("sha256", bytes),
      });
      const image = await waitForStatus(id, "active", getStack().tokens.alice, 45_000);
      expect(image).toMatchObject({
        disk_format: "raw",
        source_format: diskFormat,
        converted: true,
        size: expected.length,
        virtual_size: expected.length,
        checksum: hex("md5", expected),
        os_hash_value: hex("sha512", expected),
      });
      expect(hex("sha256", await storedBytes(id))).toBe(hex("sha256", expected));
    });
  }

  // Streamed through gunzip when the image allows it; spooled first when it needs its end (a
  // streamOptimized vmdk's footer, a fixed vhd's) or ranged reads.
  for (const [label, diskFormat, args] of CASES) {
    it(`a gzip-wrapped ${label} is unwrapped and converted, with the digests of qemu-img's raw`, async () => {
      const file = join(dir, `gz-${label.replace(/\W+/g, "-")}.img`);
      qemuImg("convert", "-f", "raw", ...args, source, file);
      const gz = execFileSync("gzip", ["-c", file], { maxBuffer: 64 * 1024 * 1024 });
      const expected = referenceRaw(file, diskFormat === "vhd" ? "vpc" : diskFormat);
      const id = await upload(gz, { name: `gz ${label}` });
      const image = await waitForStatus(id, "active", getStack().tokens.alice, 45_000);
      expect(image).toMatchObject({
        disk_format: "raw",
        source_format: `${diskFormat}+gzip`,
        converted: true,
        size: expected.length,
        checksum: hex("md5", expected),
        os_hash_value: hex("sha512", expected),
      });
    });
  }

  it("a gzip-wrapped qcow2 stored out of order is unwrapped into a spool, converted, and the spool deleted", async () => {
    const file = join(dir, "reversed.qcow2");
    qemuImg("create", "-f", "qcow2", file, "4M");
    // Written back to front, so the qcow2's host order is the reverse of its guest order: a gzip
    // stream of it cannot be converted in one forward pass.
    // Random bytes, so the gzip stream stays within the gzip-bomb ratio.
    for (let i = 3; i >= 0; i--) {
      const piece = join(dir, `piece-${i}`);
      writeFileSync(piece, randomBytes(1024 * 1024));
      execFileSync("qemu-io", ["-f", "qcow2", "-c", `write -s ${piece} ${i}M 1M`, file], { stdio: "ignore" });
    }
    const gz = execFileSync("gzip", ["-c", file], { maxBuffer: 64 * 1024 * 1024 });
    const expected = referenceRaw(file);
    const id = await upload(gz, { name: "gz-reversed", upload_sha256: hex("sha256", gz) });
    const image = await waitForStatus(id, "active", getStack().tokens.alice, 45_000);
    expect(image).toMatchObject({
      disk_format: "raw",
      source_format: "qcow2+gzip",
      size: expected.length,
      checksum: hex("md5", expected),
      os_hash_value: hex("sha512", expected),
    });
    expect(hex("sha256", await storedBytes(id))).toBe(hex("sha256", expected));
    const spool = await s3Client().send(
      new ListObjectsV2Command({ Bucket: getStack().bucket, Prefix: `spool/${id}` }),
    );
    expect(spool.KeyCount ?? 0).toBe(0);
  });

  it("an ISO (accepted by default) is stored unchanged, with its virtual size", async () => {
    const iso = buildIso(600, "HANGAR_TEST");
    const id = await upload(iso, { name: "iso", disk_format: "iso", container_format: "bare" });
    const image = await waitForStatus(id, "active", getStack().tokens.alice);
    expect(image).toMatchObject({
      disk_format: "iso",
      source_format: "iso",
      converted: false,
      size: iso.length,
      virtual_size: iso.length,
      checksum: hex("md5", iso),
    });
  });

  it("a gzip-wrapped raw image is unwrapped and stored as raw", async () => {
    const raw = readFileSync(source);
    const gz = execFileSync("gzip", ["-c", source], { maxBuffer: 64 * 1024 * 1024 });
    const id = await upload(gz, { name: "gz-raw", upload_sha256: hex("sha256", gz) });
    const image = await waitForStatus(id, "active", getStack().tokens.alice, 45_000);
    expect(image).toMatchObject({
      disk_format: "raw",
      source_format: "raw+gzip",
      converted: true,
      size: raw.length,
      checksum: hex("md5", raw),
      os_hash_value: hex("sha512", raw),
    });
    expect(hex("sha256", await storedBytes(id))).toBe(hex("sha256", raw));
  });

  it("a raw upload is stored unchanged", async () => {
    const bytes = readFileSync(source);
    const id = await upload(bytes, { name: "raw", disk_format: "raw" });
    const image = await waitForStatus(id, "active", getStack().tokens.alice);
    expect(image).toMatchObject({ disk_format: "raw", converted: false, checksum: hex("md5", bytes) });
  });
});

describe("unsafe or mislabelled uploads end killed with a reason, and nothing is stored", () => {
  async function expectKilled(
    bytes: Uint8Array,
    body: Record<string, unknown>,
    reason: string,
    text: RegExp,
  ) {
    const id = await upload(bytes, { name: "bad", ...body });
    const image = await waitForStatus(id, "killed", getStack().tokens.alice, 45_000);
    const failure = image.failure as { reason: string; message: string };
    expect(failure.reason).toBe(reason);
    expect(failure.message).toMatch(text);
    const left = await s3Client().send(
      new ListObjectsV2Command({ Bucket: getStack().bucket, Prefix: `images/${id}` }),
    );
    expect(left.KeyCount ?? 0).toBe(0);
  }

  it("a qcow2 with a backing file is refused as UNSAFE_IMAGE", async () => {
    const file = join(dir, "backed.qcow2");
    qemuImg("create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", file, "1M");
    await expectKilled(readFileSync(file), {}, "UNSAFE_IMAGE", /backing file/);
  });

  it("a qcow2 declared as raw is refused as FORMAT_MISMATCH", async () => {
    const file = join(dir, "mislabelled.qcow2");
    qemuImg("convert", "-f", "raw", "-O", "qcow2", source, file);
    await expectKilled(
      readFileSync(file),
      { disk_format: "raw" },
      "FORMAT_MISMATCH",
      /declares disk_format raw/,
    );
  });
});
