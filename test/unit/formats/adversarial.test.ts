import { beforeAll, describe, expect, it } from "vitest";
import { INFLATE_CHUNK_BYTES } from "../../../functions/core/formats/gzip.ts";
import {
  CHECK,
  createInspector,
  detectFormat,
  MAX_CAPTURE_BYTES,
  UnsafeImageError,
  UnsupportedFormatError,
} from "../../../functions/core/formats/index.ts";
import { type QemuInfo, qemuInfo, readBytes } from "../../fixtures/generate-tools.ts";
import { generateHostileCorpus, type HostileImage } from "../../fixtures/hostile/build-hostile.ts";
import { inspectBytes } from "./helpers.ts";

let hostile: HostileImage[] = [];
beforeAll(() => {
  hostile = generateHostileCorpus();
}, 120_000);

describe("hostile images", () => {
  it("has an image for every safety check", () => {
    const covered = new Set(hostile.flatMap((h) => (h.expect.kind === "unsafe" ? [h.expect.check] : [])));
    const expected = Object.values(CHECK).filter((c) => c !== CHECK.streamLength);
    expect([...covered].sort()).toEqual([...expected].sort());
  });

  it("refuses each one with the expected named check", async () => {
    expect(hostile.length).toBeGreaterThan(40);
    for (const image of hostile) {
      const run = await inspectBytes(readBytes(image.path), 64 * 1024, image.options);
      const label = image.name;
      if (image.expect.kind === "unsupported") {
        expect({ label, error: run.error }).toEqual({ label, error: expect.any(UnsupportedFormatError) });
        expect({ label, format: (run.error as UnsupportedFormatError).format }).toEqual({
          label,
          format: image.expect.format,
        });
        continue;
      }
      const expected = image.expect;
      expect({ label, error: run.error }).toEqual({ label, error: expect.any(UnsafeImageError) });
      const error = run.error as UnsafeImageError;
      expect({ label, check: error.check }).toEqual({ label, check: expected.check });
      expect(error.message.startsWith(`${expected.check}: `)).toBe(true);
      if (expected.mentions !== undefined) {
        expect({ label, message: error.message }).toEqual({
          label,
          message: expect.stringContaining(expected.mentions),
        });
      }
      expect(error.checks.find((c) => c.name === expected.check && !c.passed)).toBeDefined();
    }
  }, 120_000);

  it("the qemu-made hostile images really reference other files, as qemu-img itself reports", () => {
    const info = (name: string) =>
      qemuInfo((hostile.find((h) => h.name === name) as HostileImage).path) as QemuInfo &
        Record<string, unknown>;
    expect(info("qcow2-backing-passwd.qcow2")["backing-filename"]).toBe("/etc/passwd");
    expect(info("qcow2-data-file.qcow2")["format-specific"]?.data?.["data-file"]).toMatch(
      /qcow2-data-file\.raw$/,
    );
    const extents = info("vmdk-descriptor-passwd.vmdk")["format-specific"]?.data?.extents as {
      filename: string;
    }[];
    expect(new Set(extents.map((e) => e.filename))).toEqual(new Set(["/etc/passwd"]));
  });

  it("qcow2 backing file message names the file", async () => {
    const image = hostile.find((h) => h.name === "qcow2-backing-passwd.qcow2") as HostileImage;
    const run = await inspectBytes(readBytes(image.path), 4096);
    expect((run.error as Error).message).toBe(
      'qcow2 backing file: the image refers to another file ("/etc/passwd"); images that read other files are refused',
    );
  });

  it("detectFormat refuses the same polyglots and unsupported formats, and only throws typed errors", () => {
    for (const image of hostile) {
      const bytes = readBytes(image.path);
      let error: unknown;
      try {
        detectFormat(bytes.subarray(0, 65536), bytes.subarray(Math.max(0, bytes.length - 512)), bytes.length);
      } catch (e) {
        error = e;
      }
      const label = image.name;
      if (image.expect.kind === "unsupported") {
        expect({ label, error }).toEqual({ label, error: expect.any(UnsupportedFormatError) });
      } else if (image.expect.check === CHECK.polyglot) {
        expect({ label, check: (error as UnsafeImageError | undefined)?.check }).toEqual({
          label,
          check: CHECK.polyglot,
        });
      } else if (error !== undefined) {
        expect({ label, error }).toEqual({ label, error: expect.any(UnsafeImageError) });
      }
    }
  });

  it("stops inflating a gzip bomb as soon as the ratio is exceeded", async () => {
    const image = hostile.find((h) => h.name === "gzip-bomb.raw.gz") as HostileImage;
    const bytes = readBytes(image.path);
    const ratio = 100;
    const inspector = createInspector({
      totalSize: bytes.length,
      maxVirtualSize: 2 ** 40,
      maxGzipRatio: ratio,
    });
    // Feed only the first quarter: a 32 MiB bomb already passes the limit there.
    const quarter = Math.floor(bytes.length / 4);
    for (let i = 0; i < quarter; i += 1024)
      await inspector.update(bytes.subarray(i, Math.min(i + 1024, quarter)));
    for (let i = quarter; i < bytes.length; i += 1024) await inspector.update(bytes.subarray(i, i + 1024));
    // Inflation stopped within one zlib output chunk of the limit, long before the 32 MiB.
    const limit = ratio * bytes.length;
    expect(inspector.inflatedBytes).toBeGreaterThan(limit);
    expect(inspector.inflatedBytes).toBeLessThanOrEqual(limit + INFLATE_CHUNK_BYTES);
    await expect(inspector.finish()).rejects.toMatchObject({ check: CHECK.gzipBomb });
    expect(inspector.peakCapturedBytes).toBeLessThanOrEqual(MAX_CAPTURE_BYTES);
  });

  it("refuses a stream shorter than the declared size", async () => {
    const inspector = createInspector({ totalSize: 4096, maxVirtualSize: 2 ** 40, maxGzipRatio: 10 });
    await inspector.update(new Uint8Array(1000));
    await expect(inspector.finish()).rejects.toMatchObject({ check: CHECK.streamLength });
  });

  it("rejects update and finish once the signal aborts", async () => {
    const controller = new AbortController();
    const inspector = createInspector({
      totalSize: 10,
      maxVirtualSize: 100,
      maxGzipRatio: 10,
      signal: controller.signal,
    });
    await inspector.update(new Uint8Array(5));
    controller.abort(new Error("client went away"));
    await expect(inspector.update(new Uint8Array(5))).rejects.toThrow("client went away");
    await expect(inspector.finish()).rejects.toThrow("client went away");
  });
});
