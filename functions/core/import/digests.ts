import { createHash, type Hash } from "node:crypto";
import { Worker } from "node:worker_threads";

export type DigestName = "md5" | "sha256" | "sha384" | "sha512";
export type DigestValues = Partial<Record<DigestName, string>>;

/** Hashes one byte stream with several algorithms; `update` may ask the caller to wait (backpressure). */
export interface Digester {
  readonly bytes: number;
  update(chunk: Uint8Array): undefined | Promise<void>;
  /** Hex digests by algorithm; call once, at the end. Releases any worker. */
  digest(): Promise<DigestValues>;
  /** Releases resources without a result (failure paths). */
  close(): void;
}

/** Hashes in the calling thread; the memory held is the hash states only. */
export class InlineDigests implements Digester {
  private readonly hashes: Map<DigestName, Hash>;
  bytes = 0;

  constructor(names: Iterable<DigestName>) {
    this.hashes = new Map([...new Set(names)].map((n) => [n, createHash(n)]));
  }

  update(chunk: Uint8Array): undefined {
    this.bytes += chunk.byteLength;
    for (const h of this.hashes.values()) h.update(chunk);
    return undefined;
  }

  async digest(): Promise<DigestValues> {
    const out: DigestValues = {};
    for (const [name, h] of this.hashes) out[name] = h.digest("hex");
    return out;
  }

  close(): void {}
}

// Plain CommonJS so it runs from an esbuild bundle and under tsx alike, with no file of its own. One
// thread serves one digester at a time and then the next: `start` opens a stream, `end` closes it.
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
let hashes = [];
parentPort.on("message", (m) => {
  if (m.type === "start") {
    hashes = m.names.map((n) => [n, createHash(n)]);
  } else if (m.type === "data") {
    const c = new Uint8Array(m.buf, 0, m.n);
    for (const [, h] of hashes) h.update(c);
    // The buffer goes back to the caller for its next batch: no garbage on either side.
    parentPort.postMessage({ type: "ack", n: m.n, buf: m.buf }, [m.buf]);
  } else if (m.type === "shared") {
    // Read in place from the caller's shared buffer, which it leaves alone until this answer.
    const c = new Uint8Array(m.sab, m.off, m.n);
    for (const [, h] of hashes) h.update(c);
    parentPort.postMessage({ type: "shared-ack" });
  } else if (m.type === "end") {
    parentPort.postMessage({ type: "digest", out: Object.fromEntries(hashes.map(([a, h]) => [a, h.digest("hex")])) });
    hashes = [];
  }
});
`;

type FromWorker =
  | { type: "ack"; n: number; buf: ArrayBuffer }
  | { type: "shared-ack" }
  | { type: "digest"; out: DigestValues };

/** Idle hashing threads kept for the next digesters; more are started when more are busy at once. */
const MAX_IDLE_THREADS = 4;

/**
 * Hashing threads, kept between imports: a thread's start (a V8 isolate; measured, two of them started
 * and ended took 140–180 ms of CPU) is paid once per process rather than twice per import, and the
 * first import after a start finds its threads already running (`prestart`). Idle threads do not keep
 * the process alive.
 */
export class HashThreads {
  private readonly idle: Worker[] = [];

  /** Threads waiting for a digester. */
  get idleCount(): number {
    return this.idle.length;
  }

  /** Starts threads until `count` are idle. */
  prestart(count = 2): void {
    while (this.idle.length < Math.min(count, MAX_IDLE_THREADS)) this.idle.push(this.spawn());
  }

  /** A thread for one digester, kept alive until it is given back. */
  take(): Worker {
    const worker = this.idle.pop() ?? this.spawn();
    worker.ref();
    return worker;
  }

  /** Gives back a thread whose stream ended cleanly (every message it was sent has been answered). */
  give(worker: Worker): void {
    worker.unref();
    if (this.idle.length < MAX_IDLE_THREADS) this.idle.push(worker);
    else void worker.terminate();
  }

  /** Ends a thread that failed or was abandoned mid-stream: its state is unknown. */
  discard(worker: Worker): void {
    const at = this.idle.indexOf(worker);
    if (at >= 0) this.idle.splice(at, 1);
    void worker.terminate();
  }

  private spawn(): Worker {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    // A thread that dies while idle is dropped; one that dies in use fails its digester.
    worker.on("error", () => this.discard(worker));
    worker.unref();
    return worker;
  }
}

/** The process's hashing threads, shared by every digester that does not bring its own. */
export const hashThreads = new HashThreads();

/** Batches sent to the worker: large enough that messaging costs little against hashing. */
const BATCH_BYTES = 1024 * 1024;
/** Bytes handed to the worker and not yet hashed before `update` makes the caller wait. */
const MAX_IN_FLIGHT = 8 * 1024 * 1024;

/**
 * Hashes in a worker thread so md5 on the caller's thread and sha512 here overlap (measured on
 * the development machine: md5 + sha512 in one thread 372 MB/s, split 562 MB/s). Memory: at most
 * MAX_IN_FLIGHT + BATCH_BYTES of copied chunks. A chunk backed by a SharedArrayBuffer is not copied:
 * the worker reads it in place, and `update` returns a promise that settles once it has. The thread
 * comes from `threads` and goes back to it once the digest is read.
 */
export class WorkerDigests implements Digester {
  private readonly worker: Worker;
  private current: Uint8Array | undefined;
  private fill = 0;
  private readonly free: ArrayBuffer[] = [];
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  private readonly shared: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private failure: Error | undefined;
  private result: Promise<DigestValues>;
  private released = false;
  private readonly onMessage: (m: FromWorker) => void;
  private readonly onError: (e: Error) => void;
  bytes = 0;

  constructor(
    names: Iterable<DigestName>,
    private readonly threads: HashThreads = hashThreads,
  ) {
    this.worker = threads.take();
    let settle: { resolve: (v: DigestValues) => void; reject: (e: Error) => void } | undefined;
    this.result = new Promise<DigestValues>((resolve, reject) => {
      settle = { resolve, reject };
    });
    this.result.catch(() => undefined);
    this.onMessage = (m) => {
      if (m.type === "shared-ack") {
        this.shared.shift()?.resolve();
      } else if (m.type === "ack") {
        this.inFlight -= m.n;
        this.free.push(m.buf);
        if (this.inFlight <= MAX_IN_FLIGHT) for (const w of this.waiters.splice(0)) w();
      } else settle?.resolve(m.out);
    };
    this.onError = (e) => {
      this.failure = e;
      for (const w of this.waiters.splice(0)) w();
      for (const w of this.shared.splice(0)) w.reject(e);
      settle?.reject(e);
      this.release(false);
    };
    this.worker.on("message", this.onMessage);
    this.worker.on("error", this.onError);
    this.worker.postMessage({ type: "start", names: [...new Set(names)] });
  }

  private flush(): void {
    if (!this.current || !this.fill) return;
    const buf = this.current.buffer as ArrayBuffer;
    this.worker.postMessage({ type: "data", buf, n: this.fill }, [buf]);
    this.inFlight += this.fill;
    this.current = undefined;
    this.fill = 0;
  }

  update(chunk: Uint8Array): undefined | Promise<void> {
    if (this.failure) throw this.failure;
    if (this.released) throw new Error("update after the digest");
    this.bytes += chunk.byteLength;
    if (chunk.buffer instanceof SharedArrayBuffer) {
      // Whatever is batched goes first: the worker hashes messages in the order they are sent.
      this.flush();
      this.worker.postMessage({
        type: "shared",
        sab: chunk.buffer,
        off: chunk.byteOffset,
        n: chunk.byteLength,
      });
      return new Promise<void>((resolve, reject) => this.shared.push({ resolve, reject }));
    }
    // Copied into fixed batch buffers that travel to the worker and back: memory stays at
    // MAX_IN_FLIGHT + BATCH_BYTES whatever the chunk sizes, and nothing is left for the GC.
    for (let off = 0; off < chunk.byteLength; ) {
      this.current ??= new Uint8Array(this.free.pop() ?? new ArrayBuffer(BATCH_BYTES));
      const n = Math.min(chunk.byteLength - off, BATCH_BYTES - this.fill);
      this.current.set(chunk.subarray(off, off + n), this.fill);
      this.fill += n;
      off += n;
      if (this.fill === BATCH_BYTES) this.flush();
    }
    if (this.inFlight <= MAX_IN_FLIGHT) return undefined;
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  async digest(): Promise<DigestValues> {
    if (this.released) throw this.failure ?? new Error("the digest was read already");
    this.flush();
    this.worker.postMessage({ type: "end" });
    const out = await this.result;
    // The digest answers every message before it: the thread is clean for the next digester.
    this.release(true);
    return out;
  }

  close(): void {
    this.release(false);
  }

  private release(clean: boolean): void {
    if (this.released) return;
    this.released = true;
    this.worker.off("message", this.onMessage);
    this.worker.off("error", this.onError);
    // Nothing answers any more: whoever waits for a chunk to be hashed in place is told so.
    const closed = new Error("the digester was closed");
    for (const w of this.shared.splice(0)) w.reject(closed);
    for (const w of this.waiters.splice(0)) w();
    if (clean) this.threads.give(this.worker);
    else this.threads.discard(this.worker);
  }
}

/** Several digesters fed the same stream: each algorithm goes where it costs least. */
export class CombinedDigests implements Digester {
  constructor(private readonly parts: Digester[]) {}
  get bytes(): number {
    return this.parts[0]?.bytes ?? 0;
  }
  update(chunk: Uint8Array): undefined | Promise<void> {
    const waits = this.parts.map((p) => p.update(chunk)).filter((w) => w !== undefined);
    return waits.length ? Promise.all(waits).then(() => undefined) : undefined;
  }
  async digest(): Promise<DigestValues> {
    const all = await Promise.all(this.parts.map((p) => p.digest()));
    return Object.assign({}, ...all);
  }
  close(): void {
    for (const p of this.parts) p.close();
  }
}

/**
 * The digester for a set of algorithms: md5 stays on the calling thread, the rest (the slow sha512
 * above all) in one worker. With `inline`, everything runs on the calling thread (tests, tiny inputs).
 * With `inPlace` (chunks backed by SharedArrayBuffers, left alone until `update`'s promise settles),
 * md5 gets a worker of its own too, so no hashing runs on the calling thread and nothing is copied.
 */
export function createDigester(
  names: Iterable<DigestName>,
  options: { inline?: boolean; inPlace?: boolean } = {},
): Digester {
  const set = [...new Set(names)];
  if (options.inline || set.length === 0) return new InlineDigests(set);
  if (options.inPlace) {
    const md5 = set.filter((n) => n === "md5");
    const rest = set.filter((n) => n !== "md5");
    const workers = [md5, rest].filter((g) => g.length > 0).map((g) => new WorkerDigests(g));
    return workers.length === 1 ? (workers[0] as WorkerDigests) : new CombinedDigests(workers);
  }
  if (set.length <= 1) return new InlineDigests(set);
  const main = set.filter((n) => n === "md5");
  const rest = set.filter((n) => n !== "md5");
  if (!main.length || !rest.length) return new WorkerDigests(set);
  return new CombinedDigests([new InlineDigests(main), new WorkerDigests(rest)]);
}
