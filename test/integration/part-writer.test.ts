import { createHash, randomBytes } from "node:crypto";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand } from "@aws-sdk/client-s3";
import { describe, expect, it } from "vitest";
import { createWriterClient } from "../../functions/adapters/s3/object-store.ts";
import { writeObject } from "../../functions/adapters/s3/part-writer.ts";
import { sharedBuffers } from "../../functions/core/buffers.ts";
import { useAwsKeys } from "../aws-keys.ts";
import { getStack, s3Client } from "./setup/stack.ts";

const MiB = 1024 * 1024;
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** `data` in chunks of uneven sizes, some larger than a part, some a few bytes. */
async function* chunked(data: Uint8Array, failAt?: number): AsyncGenerator<Uint8Array> {
  const sizes = [1, 70_000, 3 * MiB + 5, 7 * MiB, 12, 65_536];
  for (let off = 0, i = 0; off < data.length; i++) {
    if (failAt !== undefined && off >= failAt) throw new Error("the source broke");
    const n = Math.min(data.length - off, sizes[i % sizes.length] ?? 1);
    yield data.subarray(off, off + n);
    off += n;
  }
}

async function stored(key: string): Promise<Uint8Array | undefined> {
  try {
    const out = await s3Client().send(new GetObjectCommand({ Bucket: getStack().bucket, Key: key }));
    return out.Body?.transformToByteArray();
  } catch {
    return undefined;
  }
}

async function pendingUploads(key: string): Promise<number> {
  const out = await s3Client().send(
    new ListMultipartUploadsCommand({ Bucket: getStack().bucket, Prefix: key }),
  );
  return (out.Uploads ?? []).length;
}

const options = (key: string) => ({
  client: s3Client(),
  bucket: getStack().bucket,
  key,
  partSize: 5 * MiB,
  queueSize: 2,
  contentType: "application/octet-stream",
});

describe("writeObject: the importer's multipart writer, against MinIO", () => {
  it("stores a multipart body byte for byte, showing the tap every byte in order from at most queueSize + 1 buffers", async () => {
    const key = "test/part-writer/multi";
    const data = randomBytes(23 * MiB + 17);
    const tapped = createHash("sha256");
    const buffers = new Set<ArrayBufferLike>();
    let pieces = 0;
    const { size } = await writeObject(chunked(data), {
      ...options(key),
      tap: (bytes) => {
        expect(bytes.byteLength).toBeLessThanOrEqual(5 * MiB);
        expect(bytes.buffer).toBeInstanceOf(SharedArrayBuffer);
        buffers.add(bytes.buffer);
        pieces++;
        tapped.update(bytes);
        // A slow consumer: the writer must not refill this buffer before the promise settles.
        const copy = Buffer.from(bytes);
        return new Promise((resolve, reject) =>
          setTimeout(
            () => (Buffer.compare(copy, bytes) === 0 ? resolve() : reject(new Error("refilled"))),
            20,
          ),
        );
      },
    });
    expect(size).toBe(data.length);
    expect(pieces).toBe(5);
    expect(buffers.size).toBeLessThanOrEqual(3);
    expect(tapped.digest("hex")).toBe(sha256(data));
    const got = await stored(key);
    expect(got && sha256(got)).toBe(sha256(data));
    expect(await pendingUploads(key)).toBe(0);
  });

  it("sends the parts of Hangar's writing client over its kept-alive connections, not one new connection per part", async () => {
    const key = "test/part-writer/connections";
    const data = randomBytes(6 * 5 * MiB);
    const info = getStack();
    // The writing client takes its credentials from the environment, as in the function.
    const restoreKeys = useAwsKeys(info.accessKeyId, info.secretAccessKey);
    const client = createWriterClient(info.region, info.s3Endpoint);
    let connections = 0;
    const opened = () => {
      connections++;
    };
    subscribe("net.client.socket", opened);
    try {
      // One part at a time: kept-alive, every request after the first finds the connection free.
      await writeObject(chunked(data), { ...options(key), client, queueSize: 1 });
    } finally {
      unsubscribe("net.client.socket", opened);
      client.destroy();
      restoreKeys();
    }
    const got = await stored(key);
    expect(got && sha256(got)).toBe(sha256(data));
    // Six parts, the create and the complete: with a connection each, eight.
    expect(connections).toBeLessThanOrEqual(2);
  });

  it("keeps its part buffers for the next write: a second write makes none, and writes side by side store their own bytes", async () => {
    const data = [randomBytes(12 * MiB + 5), randomBytes(11 * MiB + 9)];
    // The tap sees the first write's bytes, as the importer's hashing threads do.
    const hash = createHash("sha256");
    await writeObject(chunked(data[0] as Buffer), {
      ...options("test/part-writer/kept-1"),
      tap: (bytes) => void hash.update(bytes),
    });
    expect(hash.digest("hex")).toBe(sha256(data[0] as Buffer));
    const made = sharedBuffers.made;
    await writeObject(chunked(data[1] as Buffer), options("test/part-writer/kept-2"));
    expect(sharedBuffers.made).toBe(made);
    await Promise.all([
      writeObject(chunked(data[1] as Buffer), options("test/part-writer/kept-3")),
      writeObject(chunked(data[0] as Buffer), options("test/part-writer/kept-4")),
    ]);
    for (const [key, d] of [
      ["kept-1", data[0]],
      ["kept-2", data[1]],
      ["kept-3", data[1]],
      ["kept-4", data[0]],
    ] as const) {
      const got = await stored(`test/part-writer/${key}`);
      expect(got && sha256(got), key).toBe(sha256(d as Buffer));
    }
  });

  it("grows its parts when a body is larger than expected, and keeps the bytes in order", async () => {
    const key = "test/part-writer/growing";
    const data = randomBytes(23 * MiB + 5);
    const pieces: number[] = [];
    const tapped = createHash("sha256");
    const { size } = await writeObject(chunked(data), {
      ...options(key),
      // Doubling every 2 parts: 5, 5, 10, then the 3 MiB + 5 bytes left.
      growEvery: 2,
      tap: (bytes) => {
        pieces.push(bytes.byteLength);
        tapped.update(bytes);
        return undefined;
      },
    });
    expect(size).toBe(data.length);
    expect(pieces).toEqual([5 * MiB, 5 * MiB, 10 * MiB, 3 * MiB + 5]);
    expect(tapped.digest("hex")).toBe(sha256(data));
    const got = await stored(key);
    expect(got && sha256(got)).toBe(sha256(data));
    expect(await pendingUploads(key)).toBe(0);
  });

  it("sends a body that fits one part, or an empty one, as a single object", async () => {
    for (const [key, data] of [
      ["test/part-writer/small", randomBytes(5 * MiB)],
      ["test/part-writer/empty", new Uint8Array(0)],
    ] as const) {
      const { size } = await writeObject(chunked(data), options(key));
      expect(size).toBe(data.length);
      const head = await s3Client().send(new HeadObjectCommand({ Bucket: getStack().bucket, Key: key }));
      expect(head.ContentLength).toBe(data.length);
      // A multipart object's ETag ends in "-<parts>"; a single PUT's is the md5.
      expect(head.ETag).toBe(`"${createHash("md5").update(data).digest("hex")}"`);
    }
  });

  it("leaves no object and no parts when the body fails, the tap fails, or the write is aborted", async () => {
    const data = randomBytes(16 * MiB);
    const broken = "test/part-writer/broken-body";
    await expect(writeObject(chunked(data, 12 * MiB), options(broken))).rejects.toThrow("the source broke");

    const refused = "test/part-writer/tap-refuses";
    let calls = 0;
    await expect(
      writeObject(chunked(data), {
        ...options(refused),
        tap: () => (++calls === 2 ? Promise.reject(new Error("digest failed")) : undefined),
      }),
    ).rejects.toThrow("digest failed");

    const aborted = "test/part-writer/aborted";
    const controller = new AbortController();
    const slow = async function* () {
      for await (const c of chunked(data)) {
        yield c;
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    setTimeout(() => controller.abort(new Error("stop")), 30);
    await expect(writeObject(slow(), { ...options(aborted), signal: controller.signal })).rejects.toThrow();

    for (const key of [broken, refused, aborted]) {
      expect(await stored(key), key).toBeUndefined();
      expect(await pendingUploads(key), key).toBe(0);
    }
  });
});
