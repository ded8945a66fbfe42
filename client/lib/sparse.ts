import { type FileHandle, open } from "node:fs/promises";

/** Holes are made per filesystem block: a block of zeros is not written. */
const BLOCK = 4096;
const ZEROS = new Uint8Array(BLOCK);

const allZero = (bytes: Uint8Array) => Buffer.compare(bytes, ZEROS.subarray(0, bytes.length)) === 0;

/**
 * Writes a new file front to back, leaving a hole wherever a whole 4 KiB block is zero: it seeks past
 * such blocks and sets the final length at the end, so a mostly empty disk image takes the disk space of
 * its data only (where the filesystem supports holes; elsewhere the skipped blocks read as zeros anyway).
 */
export class SparseWriter {
  private position = 0;

  private constructor(private readonly fh: FileHandle) {}

  static async create(path: string): Promise<SparseWriter> {
    return new SparseWriter(await open(path, "w"));
  }

  /** Bytes written so far, holes included. */
  get size(): number {
    return this.position;
  }

  async write(chunk: Uint8Array): Promise<void> {
    let run = -1;
    for (let at = 0; at < chunk.length; ) {
      const end = Math.min(chunk.length, at + BLOCK - ((this.position + at) % BLOCK));
      const zero = allZero(chunk.subarray(at, end));
      if (!zero && run < 0) run = at;
      if (zero && run >= 0) {
        await this.put(chunk, run, at);
        run = -1;
      }
      at = end;
    }
    if (run >= 0) await this.put(chunk, run, chunk.length);
    this.position += chunk.length;
  }

  private async put(chunk: Uint8Array, from: number, to: number): Promise<void> {
    let done = from;
    while (done < to) {
      const { bytesWritten } = await this.fh.write(chunk, done, to - done, this.position + done);
      done += bytesWritten;
    }
  }

  /** Sets the file's length (a trailing hole is never written) and closes it. */
  async finish(): Promise<void> {
    try {
      await this.fh.truncate(this.position);
    } finally {
      await this.fh.close();
    }
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}
