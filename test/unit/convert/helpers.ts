import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  statSync,
  writeSync,
} from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import type { RangeReader, SequentialSource } from "../../../functions/core/convert/ports.ts";

export const FIXTURES = join(import.meta.dirname, "../../fixtures/generated/convert");
const MiB = 1 << 20;

/** Runs qemu-img and returns its stdout. */
export function qemuImg(...args: string[]): string {
  return execFileSync("qemu-img", args, { encoding: "utf8", maxBuffer: 64 * MiB });
}

/** Guest ranges that hold data in a qcow2, as `qemu-img map` reports them, merged. */
export function qcow2DataRanges(file: string): [number, number][] {
  const map = JSON.parse(qemuImg("map", "--output=json", "-f", "qcow2", file)) as {
    start: number;
    length: number;
    data: boolean;
  }[];
  const out: [number, number][] = [];
  for (const m of map.filter((e) => e.data)) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === m.start) last[1] += m.length;
    else out.push([m.start, m.length]);
  }
  return out;
}

/**
 * A raw disk with random data, holes, explicit zeros, a compressible stretch and a size that is not a
 * multiple of any cluster size. Written once and cached.
 */
export function baseRaw(): string {
  mkdirSync(FIXTURES, { recursive: true });
  const path = join(FIXTURES, "base.raw");
  if (existsSync(path)) return path;
  const size = 6 * MiB + 3 * 512;
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, "w");
  try {
    const urandom = openSync("/dev/urandom", "r");
    const random = (n: number) => {
      const b = Buffer.alloc(n);
      readSync(urandom, b, 0, n, null);
      return b;
    };
    writeSync(fd, random(MiB), 0, MiB, 0);
    writeSync(fd, random(100 * 1024), 0, 100 * 1024, 2 * MiB);
    writeSync(fd, Buffer.alloc(MiB / 2), 0, MiB / 2, 3 * MiB);
    writeSync(fd, random(MiB - 4096), 0, MiB - 4096, 4 * MiB + 4096);
    const text = Buffer.from(
      Array.from({ length: 40000 }, (_, i) => `line ${i} ${randomBytes(2).toString("hex")}\n`).join(""),
    ).subarray(0, MiB / 2);
    writeSync(fd, text, 0, text.length, 5 * MiB);
    const tail = random(64 * 1024 + 3 * 512);
    writeSync(fd, tail, 0, tail.length, size - tail.length);
    closeSync(urandom);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  return path;
}

/** Converts the base raw disk with qemu-img (cached by name). */
export function makeImage(
  name: string,
  format: string,
  options: string[] = [],
  extra: string[] = [],
): string {
  const path = join(FIXTURES, name);
  if (existsSync(path)) return path;
  const base = baseRaw();
  const opt = options.length > 0 ? ["-o", options.join(",")] : [];
  const tmp = `${path}.${process.pid}.tmp`;
  qemuImg("convert", "-f", "raw", "-O", format, ...opt, ...extra, base, tmp);
  renameSync(tmp, path);
  return path;
}

/**
 * An image of `format` created empty and then written through qemu-io, which goes through the
 * format's driver as a guest's writes would (allocation in write order, zero flags, discards).
 */
export function guestWritten(
  name: string,
  format: string,
  options: string[],
  size: number,
  commands: string[],
): string {
  const path = join(FIXTURES, name);
  if (existsSync(path)) return path;
  mkdirSync(FIXTURES, { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  qemuImg("create", "-f", format, "-o", options.join(","), tmp, String(size));
  execFileSync("qemu-io", ["-f", format, ...commands.flatMap((c) => ["-c", c]), tmp], { stdio: "ignore" });
  renameSync(tmp, path);
  return path;
}

/** sha256 of qemu-img's raw conversion of `path`: the expected output of every differential test. */
export function qemuRawSha256(path: string, format: string): { sha256: string; size: number } {
  const out = `${path}.qemu.raw`;
  if (!existsSync(out)) {
    qemuImg("convert", "-f", format, "-O", "raw", path, `${out}.${process.pid}.tmp`);
    renameSync(`${out}.${process.pid}.tmp`, out);
  }
  return { sha256: sha256File(out), size: statSync(out).size };
}

export function sha256File(path: string): string {
  const hash = createHash("sha256");
  const fd = openSync(path, "r");
  const buf = Buffer.alloc(MiB);
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

/** A RangeReader over a file that also counts its reads. */
export async function fileRange(
  path: string,
): Promise<RangeReader & { reads: number; close(): Promise<void> }> {
  const handle = await open(path, "r");
  const size = (await handle.stat()).size;
  const reader = {
    size,
    reads: 0,
    async read(offset: number, length: number, signal?: AbortSignal) {
      signal?.throwIfAborted();
      if (offset < 0 || offset + length > size)
        throw new RangeError(`read ${offset}+${length} beyond ${size}`);
      reader.reads++;
      const buf = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) throw new Error("short read");
        done += bytesRead;
      }
      return buf;
    },
    close: () => handle.close(),
  };
  return reader;
}

/** A RangeReader over bytes in memory; it fills the buffer it is offered, as a file reader would. */
export function memoryRange(bytes: Uint8Array): RangeReader {
  return {
    size: bytes.length,
    async read(offset, length, _signal, into) {
      if (offset < 0 || offset + length > bytes.length) throw new RangeError("read beyond the end");
      if (into) {
        into.set(bytes.subarray(offset, offset + length));
        return into;
      }
      return Uint8Array.prototype.slice.call(bytes, offset, offset + length);
    },
  };
}

/** A sequential source over a file, in chunks of `chunk` bytes. */
export function fileSequential(path: string, chunk = MiB): SequentialSource {
  return {
    async *stream(signal?: AbortSignal) {
      const handle = await open(path, "r");
      try {
        for (;;) {
          signal?.throwIfAborted();
          const buf = new Uint8Array(chunk);
          const { bytesRead } = await handle.read(buf, 0, chunk, null);
          if (bytesRead === 0) return;
          yield buf.subarray(0, bytesRead);
        }
      } finally {
        await handle.close();
      }
    },
  };
}

/** sha256 and length of everything an async iterable yields. */
export async function digest(chunks: AsyncIterable<Uint8Array>): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const c of chunks) {
    hash.update(c);
    size += c.length;
  }
  return { sha256: hash.digest("hex"), size };
}
