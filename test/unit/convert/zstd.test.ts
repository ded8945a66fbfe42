import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CorruptImageError } from "../../../functions/core/convert/errors.ts";
import { convertToRaw } from "../../../functions/core/convert/index.ts";
import { decodeZstdCluster, zstdFrameLength } from "../../../functions/core/convert/zstd.ts";
import { digest, makeImage, memoryRange } from "./helpers.ts";

const K = 1024;

/** A Zstandard frame header as QEMU writes one: single-segment, 2-byte content size (minus 256). */
function header(size: number, fhd = 0x60): number[] {
  const fcs = size - 256;
  return [0x28, 0xb5, 0x2f, 0xfd, fhd, fcs & 0xff, fcs >> 8];
}

/** A block header: last flag, type (0 raw, 1 RLE, 2 compressed, 3 reserved), size. */
function block(last: boolean, type: number, size: number): number[] {
  const v = (size << 3) | (type << 1) | (last ? 1 : 0);
  return [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff];
}

function frame(...parts: (number[] | Uint8Array)[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((p) => Array.from(p)));
}

function corrupt(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(CorruptImageError);
    return String(err);
  }
  throw new Error("expected a CorruptImageError");
}

describe("zstd clusters", () => {
  const data = Uint8Array.from({ length: 64 * K }, (_, i) => (i * 7) & 0xff);

  it("decodes a frame of raw and RLE blocks, ignoring the next cluster's bytes after it", () => {
    const f = frame(
      header(64 * K),
      block(false, 0, 32 * K),
      data.subarray(0, 32 * K),
      block(true, 1, 32 * K),
      [0x5a],
    );
    const packed = frame(f, [0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]);
    expect(zstdFrameLength(packed, 64 * K)).toBe(f.length);
    const out = decodeZstdCluster(packed, 64 * K);
    expect(out.subarray(0, 32 * K)).toEqual(data.subarray(0, 32 * K));
    expect(out.subarray(32 * K).every((b) => b === 0x5a)).toBe(true);
  });

  it("refuses RLE blocks that claim more than a cluster before decoding any", () => {
    // 3 bytes of header and 1 of value per 128 KiB: 4 KiB of frame would claim 128 MiB.
    const blocks = Array.from({ length: 1000 }, (_, i) => [...block(i === 999, 1, 128 * K), 0]);
    expect(corrupt(() => decodeZstdCluster(frame(header(64 * K), ...blocks), 64 * K))).toMatch(/more than/);
  });

  it("refuses a window over 8 MiB, a missing or wrong size, a dictionary, reserved bits and block types", () => {
    const tail = [...block(true, 0, 4), 1, 2, 3, 4];
    // Not single-segment, window descriptor 0xf8: 2^41 bytes.
    expect(
      corrupt(() => zstdFrameLength(frame([0x28, 0xb5, 0x2f, 0xfd, 0x40, 0xf8, 0, 0], tail), 4)),
    ).toMatch(/window/);
    expect(corrupt(() => zstdFrameLength(frame([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x50], tail), 4))).toMatch(
      /declare its size/,
    );
    expect(corrupt(() => zstdFrameLength(frame(header(64 * K), tail), 32 * K))).toMatch(/declares 65536/);
    expect(corrupt(() => zstdFrameLength(frame(header(64 * K, 0x61), [7], tail), 64 * K))).toMatch(
      /dictionary/,
    );
    expect(corrupt(() => zstdFrameLength(frame(header(64 * K, 0x68), tail), 64 * K))).toMatch(/reserved bit/);
    expect(
      corrupt(() => zstdFrameLength(frame(header(64 * K), block(true, 3, 4), [1, 2, 3, 4]), 64 * K)),
    ).toMatch(/reserved type/);
    expect(corrupt(() => zstdFrameLength(frame([0x28, 0xb5, 0x2f, 0xfc, 0x60, 0, 0]), 64 * K))).toMatch(
      /zstd frame/,
    );
  });

  it("refuses a truncated frame, and one that holds fewer bytes than it declares", () => {
    const whole = frame(header(64 * K), block(true, 0, 64 * K), data);
    for (const cut of [3, 6, 9, whole.length - 1]) {
      expect(corrupt(() => decodeZstdCluster(whole.subarray(0, cut), 64 * K))).toMatch(/truncated/);
    }
    const short = frame(header(64 * K), block(true, 0, 1000), data.subarray(0, 1000));
    expect(corrupt(() => decodeZstdCluster(short, 64 * K))).toMatch(/holds 1000 bytes/);
  });

  it("reports a compressed cluster the decoder cannot read as corrupt, within the image", async () => {
    const bytes = Uint8Array.from(
      readFileSync(makeImage("v3-64k-zstd.qcow2", "qcow2", ["compat=1.1", "compression_type=zstd"], ["-c"])),
    );
    // Every compressed block's payload after its first bytes is overwritten, frames and headers kept.
    let damaged = 0;
    for (let at = 0; at + 12 < bytes.length; at++) {
      if (bytes[at] === 0x28 && bytes[at + 1] === 0xb5 && bytes[at + 2] === 0x2f && bytes[at + 3] === 0xfd) {
        const h =
          (bytes[at + 7] as number) | ((bytes[at + 8] as number) << 8) | ((bytes[at + 9] as number) << 16);
        if (((h >> 1) & 3) === 2) {
          bytes.fill(0xff, at + 12, at + 12 + Math.min(64, h >>> 3) - 2);
          damaged++;
        }
      }
    }
    expect(damaged).toBeGreaterThan(0);
    const err = await digest(convertToRaw("qcow2", { range: memoryRange(bytes) })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptImageError);
  });

  it("decodes damaged compressed frames to a cluster or a CorruptImageError, nothing else", () => {
    const image = readFileSync(
      makeImage(
        "v3-4k-zstd.qcow2",
        "qcow2",
        ["compat=1.1", "cluster_size=4096", "compression_type=zstd"],
        ["-c"],
      ),
    );
    // The first frame with a compressed block: QEMU's frames start 28 b5 2f fd 60 and a 2-byte size.
    let at = -1;
    for (let i = image.indexOf(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])); i >= 0; ) {
      if ((((image[i + 7] as number) >> 1) & 3) === 2) {
        at = i;
        break;
      }
      i = image.indexOf(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), i + 1);
    }
    expect(at).toBeGreaterThanOrEqual(0);
    const original = Uint8Array.from(image.subarray(at, at + 4096 + 512));
    expect(decodeZstdCluster(original, 4096)).toHaveLength(4096);
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.nat(4095), value: fc.integer({ min: 0, max: 255 }) }), {
          minLength: 1,
          maxLength: 6,
        }),
        (edits) => {
          const bytes = Uint8Array.from(original);
          for (const e of edits) bytes[7 + (e.at % (bytes.length - 7))] = e.value;
          try {
            expect(decodeZstdCluster(bytes, 4096)).toHaveLength(4096);
          } catch (err) {
            expect(err).toBeInstanceOf(CorruptImageError);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
