/**
 * Large buffers kept for the next user in the same process: the importer's part buffers, read slabs
 * and converter windows.
 *
 * Memory a process touches for the first time costs far more than memory it reuses: each new page is a
 * fault the kernel (and, in a virtual machine, the hypervisor) must serve. Measured on the development
 * machine (2 vCPUs): filling 512 MiB of newly allocated buffers took 0.35–2 CPU-s (the cost of a fault
 * moved between 2.7 and 15 µs with the machine's state), filling the same buffers again 0.03 s; an
 * import of 1 GiB of output touched 60–70 MiB of new memory (15,000–18,000 minor faults) when every
 * import allocated its own. A Lambda instance runs one invocation at a time and keeps its
 * process between them, so buffers given back here are allocated once per instance.
 *
 * Only a buffer nobody reads or writes any more may be given back: the next `take` hands it to someone
 * else. A buffer given back twice is kept once.
 */
export class BufferPool<B extends ArrayBufferLike> {
  private readonly idle = new Map<number, B[]>();
  private readonly kept = new Set<B>();
  private idleBytes = 0;
  /** Buffers made so far (the rest of the takes were served from idle ones). */
  made = 0;

  constructor(
    private readonly make: (bytes: number) => B,
    /** The most idle bytes kept; a buffer given back beyond it is left to the GC. */
    readonly maxIdleBytes: number,
  ) {}

  /** Bytes held idle now. */
  get heldBytes(): number {
    return this.idleBytes;
  }

  /** A buffer of exactly `bytes`, idle or new; its contents are whatever its last user left. */
  take(bytes: number): B {
    const buffer = this.idle.get(bytes)?.pop();
    if (!buffer) {
      this.made++;
      return this.make(bytes);
    }
    this.kept.delete(buffer);
    this.idleBytes -= bytes;
    return buffer;
  }

  /** Gives back a buffer its user is done with (see above). */
  give(buffer: B): void {
    const bytes = buffer.byteLength;
    if (this.kept.has(buffer) || this.idleBytes + bytes > this.maxIdleBytes) return;
    let list = this.idle.get(bytes);
    if (!list) {
      list = [];
      this.idle.set(bytes, list);
    }
    list.push(buffer);
    this.kept.add(buffer);
    this.idleBytes += bytes;
  }
}

const MiB = 1024 * 1024;

/**
 * Shared buffers (hashing threads read them in place): the part buffers of the multipart writer (queue
 * of 4 + 1 parts of 8 MiB by default) and the read's slabs of 2 MiB, with room to spare for parts that
 * grew.
 */
export const sharedBuffers = new BufferPool((bytes) => new SharedArrayBuffer(bytes), 96 * MiB);

/** The converter's read windows (a few of 4 MiB). */
export const windowBuffers = new BufferPool((bytes) => new ArrayBuffer(bytes), 32 * MiB);
