import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  CorruptImageError,
  convertToRaw,
  gunzipSource,
  NonMonotonicSource,
  type SourceFormat,
  UnsupportedImageError,
} from "../../../functions/core/convert/index.ts";
import { HangarError } from "../../../functions/core/errors.ts";
import { digest, FIXTURES, fileRange, makeImage, memoryRange, qemuImg, qemuRawSha256 } from "./helpers.ts";

/** Converts at most `limit` output bytes; hostile sizes must not turn a test into a long write. */
async function drain(format: SourceFormat, bytes: Uint8Array, limit = 32 << 20): Promise<void> {
  let seen = 0;
  for await (const chunk of convertToRaw(format, { range: memoryRange(bytes) }, { chunkSize: 1 << 20 })) {
    seen += chunk.length;
    if (seen >= limit) return;
  }
}

/** A qemu-img-created empty image of 1 MiB (cached). */
function created(name: string, args: string[]): string {
  const path = join(FIXTURES, name);
  if (!existsSync(path)) {
    qemuImg(...args, `${path}.${process.pid}.tmp`, "1M");
    renameSync(`${path}.${process.pid}.tmp`, path);
  }
  return path;
}

const SAMPLES: { name: string; format: SourceFormat; qemu: string; options: string[]; extra?: string[] }[] = [
  {
    name: "v3-4k-c.qcow2",
    format: "qcow2",
    qemu: "qcow2",
    options: ["compat=1.1", "cluster_size=4096"],
    extra: ["-c"],
  },
  { name: "v2-64k.qcow2", format: "qcow2", qemu: "qcow2", options: ["compat=0.10"] },
  {
    name: "v3-4k-zstd.qcow2",
    format: "qcow2",
    qemu: "qcow2",
    options: ["compat=1.1", "cluster_size=4096", "compression_type=zstd"],
    extra: ["-c"],
  },
  { name: "stream.vmdk", format: "vmdk", qemu: "vmdk", options: ["subformat=streamOptimized"] },
  { name: "sparse.vmdk", format: "vmdk", qemu: "vmdk", options: ["subformat=monolithicSparse"] },
  { name: "dynamic.vhd", format: "vhd", qemu: "vpc", options: ["subformat=dynamic"] },
  { name: "dynamic.vhdx", format: "vhdx", qemu: "vhdx", options: ["subformat=dynamic", "block_size=1M"] },
  { name: "dynamic.vdi", format: "vdi", qemu: "vdi", options: [] },
];

describe("hostile and damaged images fail with typed errors", { timeout: 120_000 }, () => {
  for (const s of SAMPLES) {
    it(`${s.name}: random byte changes in the metadata`, async () => {
      const original = readFileSync(makeImage(s.name, s.qemu, s.options, s.extra));
      // Metadata lives in the first 4 MiB of these images (vhdx: headers, regions, BAT) and at the end.
      const span = Math.min(original.length, 4 << 20);
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.record({ at: fc.nat(span - 1), value: fc.integer({ min: 0, max: 255 }), end: fc.boolean() }),
            {
              minLength: 1,
              maxLength: 8,
            },
          ),
          async (edits) => {
            const bytes = new Uint8Array(original);
            for (const e of edits) bytes[e.end ? bytes.length - 1 - (e.at % 2048) : e.at] = e.value;
            try {
              await drain(s.format, bytes);
            } catch (err) {
              expect(err).toBeInstanceOf(HangarError);
            }
          },
        ),
        { numRuns: 40 },
      );
    });

    it(`${s.name}: truncated`, async () => {
      const original = readFileSync(makeImage(s.name, s.qemu, s.options, s.extra));
      for (const keep of [0, 100, 511, 4096, 70_000, original.length >> 1, original.length - 1]) {
        try {
          await drain(s.format, original.subarray(0, keep));
        } catch (err) {
          expect(err).toBeInstanceOf(HangarError);
        }
      }
    });
  }

  it("refuses extended L2 entries", async () => {
    const path = created("extl2.qcow2", ["create", "-f", "qcow2", "-o", "extended_l2=on"]);
    const err = await drain("qcow2", readFileSync(path)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedImageError);
    expect(String(err)).toMatch(/extended L2/);
  });

  it("refuses backing files", async () => {
    const base = makeImage("v3-64k.qcow2", "qcow2", ["compat=1.1"]);
    const path = created("overlay.qcow2", ["create", "-f", "qcow2", "-F", "qcow2", "-b", base]);
    const err = await drain("qcow2", readFileSync(path)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedImageError);
  });

  it("garbage in compressed clusters fails as CorruptImageError, if at all", async () => {
    const original = readFileSync(
      makeImage("v3-4k-c.qcow2", "qcow2", ["compat=1.1", "cluster_size=4096"], ["-c"]),
    );
    // Garbage where compressed data should be: decoding must fail cleanly, not crash.
    const bytes = new Uint8Array(original);
    bytes.fill(0x55, bytes.length >> 1, (bytes.length >> 1) + 65536);
    const err = await drain("qcow2", bytes).catch((e: unknown) => e);
    if (err !== undefined) expect(err).toBeInstanceOf(CorruptImageError);
  });
});

describe("out-of-order images", { timeout: 60_000 }, () => {
  const path = join(FIXTURES, "reversed.qcow2");
  const make = () => {
    if (!existsSync(path)) {
      const tmp = `${path}.${process.pid}.tmp`;
      qemuImg("create", "-f", "qcow2", tmp, "4M");
      // Written back to front, so host order is the reverse of guest order.
      for (let i = 3; i >= 0; i--) {
        execQemuIo(tmp, `write -P ${0x11 * (i + 1)} ${i}M 1M`);
      }
      renameSync(tmp, path);
    }
    return path;
  };

  it("convert correctly with ranged reads", async () => {
    const p = make();
    const range = await fileRange(p);
    try {
      expect(await digest(convertToRaw("qcow2", { range }))).toEqual(qemuRawSha256(p, "qcow2"));
    } finally {
      await range.close();
    }
  });

  it("fail clearly when only a gzip stream is available", async () => {
    const gz = gzipSync(readFileSync(make()));
    const sequential = gunzipSource({
      async *stream() {
        yield gz;
      },
    });
    await expect(digest(convertToRaw("qcow2", { sequential }))).rejects.toBeInstanceOf(NonMonotonicSource);
  });
});

describe("abort", () => {
  it("stops with the signal's reason and settles its reads", async () => {
    const path = makeImage("v3-64k.qcow2", "qcow2", ["compat=1.1"]);
    const range = await fileRange(path);
    const controller = new AbortController();
    try {
      const it = convertToRaw("qcow2", { range }, { signal: controller.signal, chunkSize: 64 << 10 });
      const run = (async () => {
        for await (const _ of it) controller.abort(new Error("stop"));
      })();
      await expect(run).rejects.toThrow("stop");
    } finally {
      await range.close();
    }
  });
});

function execQemuIo(path: string, command: string): void {
  // qemu-io ships with qemu-utils; it writes through the qcow2 driver like a guest would.
  execFileSync("qemu-io", ["-f", "qcow2", "-c", command, path], { stdio: "ignore" });
}

describe("abort while a sequential stream stalls", () => {
  it("rejects instead of waiting for the stream", async () => {
    const path = makeImage("v3-64k.qcow2", "qcow2", ["compat=1.1"]);
    const bytes = readFileSync(path);
    const controller = new AbortController();
    const sequential = {
      async *stream(signal?: AbortSignal) {
        yield bytes.subarray(0, 256 << 10);
        // A GET that stops sending: it ends only when its signal aborts.
        await new Promise((_, reject) => signal?.addEventListener("abort", () => reject(signal.reason)));
      },
    };
    const run = digest(
      convertToRaw("qcow2", { range: memoryRange(bytes), sequential }, { signal: controller.signal }),
    );
    setTimeout(() => controller.abort(new Error("stop")), 50);
    await expect(run).rejects.toThrow("stop");
  });
});
