import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HangarClient } from "../../client/lib/api.ts";
import { ImageRefusedError, inspectFile } from "../../client/lib/inspect.ts";
import { type UploadOptions, uploadFile } from "../../client/lib/upload.ts";
import { startTestApi, TEST_PART_SIZE, type TestApi } from "./multipart-server.ts";
import { getStack } from "./setup/stack.ts";

const qemuImg = (...args: string[]) => promisify(execFile)("qemu-img", args);
const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");

let server: TestApi;
let work: string;
let client: HangarClient;

beforeAll(async () => {
  server = await startTestApi();
  work = await mkdtemp(join(tmpdir(), "hangar-client-upload-it-"));
  client = new HangarClient(server.url, getStack().tokens.alice);
});
afterAll(async () => {
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

/** Options for a file larger than the hash-first limit: inspected by ranges, hashed while its parts are sent. */
function options(path: string, name: string, more: Partial<UploadOptions> = {}): UploadOptions {
  return { path, name, parallel: 2, stateDir: join(work, "state"), prehashLimit: 0, wait: true, ...more };
}

describe("the client's upload of a file with many parts", () => {
  it("sends every part's own bytes while reusing part buffers, and the declared sha256 holds on import", async () => {
    // Seven parts, each of different random bytes, two in flight: a buffer reused too early would send
    // another part's bytes, and the import would refuse the upload's sha256.
    const data = randomBytes(6 * TEST_PART_SIZE + 12_345);
    const file = join(work, "many.raw");
    await writeFile(file, data);
    let bytes = 0;
    const parts: number[] = [];
    const result = await uploadFile(
      client,
      options(file, "many", {
        diskFormat: "raw",
        events: { bytes: (n) => (bytes += n), part: (p) => parts.push(p.partNumber) },
      }),
    );
    expect(result).toMatchObject({
      status: "active",
      method: "multipart",
      part_count: 7,
      uploaded_parts: [1, 2, 3, 4, 5, 6, 7],
      skipped_parts: [],
      bytes_uploaded: data.length,
      sha256: hex("sha256", data),
      sha256_declared: true,
      file_format: "raw",
      size: data.length,
      os_hash_value: hex("sha512", data),
      failure: null,
    });
    expect(bytes).toBe(data.length);
    expect(parts.sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    await client.deleteImage(result.image_id);
  });

  it("inspects a large qcow2 by its ranges only, then converts it as the file says", async () => {
    const raw = join(work, "big.src.raw");
    const fh = await open(raw, "w");
    await fh.write(randomBytes(3 * 1024 * 1024), 0, 3 * 1024 * 1024, 2 * 1024 * 1024);
    await fh.write(randomBytes(9 * 1024 * 1024), 0, 9 * 1024 * 1024, 40 * 1024 * 1024);
    await fh.truncate(64 * 1024 * 1024);
    await fh.close();
    const qcow2 = join(work, "big.qcow2");
    await qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, qcow2);
    const file = await readFile(qcow2);

    const result = await uploadFile(client, options(qcow2, "big"));
    expect(result).toMatchObject({
      status: "active",
      file_format: "qcow2",
      disk_format: "raw",
      converted: true,
      sha256: hex("sha256", file),
      virtual_size: 64 * 1024 * 1024,
      os_hash_value: hex("sha512", await readFile(raw)),
    });
    await client.deleteImage(result.image_id);
  });

  it("refuses an unsafe qcow2 inspected by ranges before creating anything", async () => {
    const base = join(work, "base.qcow2");
    const child = join(work, "child.qcow2");
    await qemuImg("create", "-f", "qcow2", base, "16M");
    await qemuImg("create", "-f", "qcow2", "-b", base, "-F", "qcow2", child);
    const before = (await client.listImages()).length;
    const refused = await uploadFile(client, options(child, "backed")).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(ImageRefusedError);
    expect(refused).toMatchObject({ reason: "UNSAFE_IMAGE" });
    expect((refused as Error).message).toMatch(/backing file/);
    expect((await client.listImages()).length).toBe(before);
  });
});

describe("inspection of a local file", () => {
  it("gives the same verdict by ranges as reading every byte, for each kind of file", async () => {
    const disk = Buffer.alloc(8 * 1024 * 1024);
    randomBytes(1024 * 1024).copy(disk, 3 * 1024 * 1024);
    const raw = join(work, "same.raw");
    await writeFile(raw, disk);
    const files = [raw];
    for (const fmt of ["qcow2", "vmdk", "vpc", "vhdx", "vdi"]) {
      const out = join(work, `same.${fmt}`);
      await qemuImg("convert", "-f", "raw", "-O", fmt, raw, out);
      files.push(out);
    }
    const gz = join(work, "same.qcow2.gz");
    const { gzipSync } = await import("node:zlib");
    await writeFile(gz, gzipSync(await readFile(join(work, "same.qcow2"))));
    files.push(gz);
    for (const path of files) {
      const size = (await readFile(path)).length;
      const whole = await inspectFile(path, size, undefined, { sha256: true });
      const ranged = await inspectFile(path, size, undefined);
      const { sha256, ...verdict } = whole;
      expect(sha256, path).toBe(hex("sha256", await readFile(path)));
      expect(ranged, path).toEqual(verdict);
    }
  });
});
