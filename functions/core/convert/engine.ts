import { windowBuffers } from "../buffers.ts";
import { HangarError } from "../errors.ts";
import type { DiskMap, Extent } from "./disk-map.ts";
import { CorruptImageError } from "./errors.ts";
import type { RangeReader } from "./ports.ts";

/** Tuning of the read planner. */
export interface PlanOptions {
  /** Largest host range fetched at once. 8 MiB: each ranged GET costs a round trip, so make them big. */
  windowSize?: number;
  /** Host bytes between two needed ranges that are read and dropped rather than split into two reads. */
  maxGap?: number;
  /** Windows fetched ahead of the one being decoded. */
  readAhead?: number;
  /** Keep every read in increasing host order (forward-only sources). */
  forwardOnly?: boolean;
  /**
   * Reuse window buffers rather than allocate one per window (no page faults, no garbage). The
   * consumer promises to be done with a piece's bytes once it has asked for pieces holding
   * `recycleLag` more bytes of data (0: as soon as it asks for the next piece).
   */
  recycle?: boolean;
  recycleLag?: number;
  /**
   * Guest bytes of encoded extents being decoded at once, ahead of the one being yielded (at least
   * one extent). Asynchronous decoders (zlib on libuv's pool) then use every core.
   */
  decodeAhead?: number;
  signal?: AbortSignal;
}

export const DEFAULT_WINDOW = 8 << 20;
export const DEFAULT_GAP = 256 << 10;
export const DEFAULT_READ_AHEAD = 3;
/** 64 qcow2 clusters of 64 KiB, or two of 2 MiB. */
export const DEFAULT_DECODE_AHEAD = 4 << 20;

/** Guest bytes: `bytes` is absent for zeros; `host` is where stored data sits verbatim in the source. */
export interface Piece {
  readonly length: number;
  readonly bytes?: Uint8Array;
  readonly host?: number;
}

interface Group {
  hostStart: number;
  hostEnd: number;
  items: Extent[];
}

function hostSpan(e: Extent): number {
  return e.kind === "data" ? e.length : e.kind === "encoded" ? e.hostLength : 0;
}

function* splitData(e: Extent, max: number): Generator<Extent> {
  if (e.kind !== "data" || e.length <= max) {
    yield e;
    return;
  }
  for (let at = 0; at < e.length; at += max) {
    yield { kind: "data", host: e.host + at, length: Math.min(max, e.length - at) };
  }
}

type GroupOptions = Required<Omit<PlanOptions, "signal" | "recycle" | "recycleLag" | "decodeAhead">>;

const emptyGroup = (): Group => ({ hostStart: -1, hostEnd: -1, items: [] });

/** Host range [start, end) can join `g`'s window: it starts within the gap allowed and the window stays in size. */
function fitsGroup(g: Group, start: number, end: number, o: GroupOptions): boolean {
  return (
    start >= g.hostStart &&
    start <= g.hostEnd + o.maxGap &&
    Math.max(end, g.hostEnd) - g.hostStart <= o.windowSize
  );
}

/** Appends `e` to `g`, merging it into the last item when both are zeros or adjacent stored data. */
function appendExtent(g: Group, e: Extent): void {
  const last = g.items[g.items.length - 1];
  if (e.kind === "zero" && last?.kind === "zero") {
    g.items[g.items.length - 1] = { kind: "zero", length: last.length + e.length };
  } else if (e.kind === "data" && last?.kind === "data" && last.host + last.length === e.host) {
    g.items[g.items.length - 1] = { kind: "data", host: last.host, length: last.length + e.length };
  } else {
    g.items.push(e);
  }
}

/**
 * The group stored extent `e` goes in: `g`, its host range grown, or a new group when `e` does not fit
 * `g`'s window.
 */
function groupFor(g: Group, e: Extent & { host: number }, o: GroupOptions): Group {
  const start = e.host;
  const end = e.host + hostSpan(e);
  if (g.hostStart >= 0 && !fitsGroup(g, start, end, o)) return { hostStart: start, hostEnd: end, items: [] };
  g.hostStart = g.hostStart < 0 ? start : g.hostStart;
  g.hostEnd = Math.max(g.hostEnd, end);
  return g;
}

/** The extents of a batch, empty ones left out and long stored runs split to at most `max` bytes. */
function* extentsOf(batch: readonly Extent[], max: number): Generator<Extent> {
  for (const whole of batch) if (whole.length > 0) yield* splitData(whole, max);
}

/** Groups consecutive extents whose host ranges fit one window, merging runs of zeros and of adjacent data. */
async function* planGroups(map: DiskMap, o: GroupOptions, signal?: AbortSignal) {
  let g = emptyGroup();
  let covered = 0;
  for await (const batch of map.batches(signal)) {
    // Long stored runs (a fixed VHD, a raw batch, 32 MiB VHDX blocks) are read a window at a time,
    // so no single read exceeds windowSize; encoded extents are bounded by their format modules.
    for (const e of extentsOf(batch, o.windowSize)) {
      covered += e.length;
      const into = e.kind === "zero" ? g : groupFor(g, e, o);
      if (into !== g) {
        yield g;
        g = into;
      }
      appendExtent(g, e);
    }
    if (o.forwardOnly && g.hostStart >= 0) {
      yield g;
      g = emptyGroup();
    }
  }
  if (g.items.length > 0) yield g;
  if (covered !== map.virtualSize) {
    throw new CorruptImageError(`the ${map.format} map covers ${covered} bytes, expected ${map.virtualSize}`);
  }
}

function decodeFailure(e: Extent & { kind: "encoded" }, err: unknown): unknown {
  if (err instanceof HangarError) return err;
  return new CorruptImageError(`a compressed block at offset ${e.host} cannot be decoded`, { cause: err });
}

/**
 * Starts decoding `e`. `sync` tells that the decoder did all its work before returning (zstd in
 * JavaScript): decoding such blocks ahead only holds their output longer, so the engine then decodes
 * each when its turn comes.
 */
function startDecode(
  e: Extent & { kind: "encoded" },
  stored: Uint8Array,
): { result: Promise<Uint8Array>; sync: boolean } {
  let out: Uint8Array | Promise<Uint8Array>;
  try {
    out = e.decode(stored);
  } catch (err) {
    return { result: Promise.reject(decodeFailure(e, err)), sync: true };
  }
  const result = Promise.resolve(out).then(
    (bytes) => {
      if (bytes.length !== e.length) {
        throw new CorruptImageError(
          `a compressed block at offset ${e.host} decodes to ${bytes.length} bytes, expected ${e.length}`,
        );
      }
      return bytes;
    },
    (err: unknown) => {
      throw decodeFailure(e, err);
    },
  );
  return { result, sync: !(out instanceof Promise) };
}

/**
 * Guest bytes of `map` in order, as pieces (zeros are lengths only). Host reads are coalesced into
 * windows of up to `windowSize` bytes with `readAhead` windows in flight, so memory stays within
 * about (readAhead + 1) × windowSize plus one metadata table, whatever the image size.
 * On failure or early return the in-flight reads are aborted and awaited before this returns.
 */
export async function* pieces(
  map: DiskMap,
  data: RangeReader,
  options: PlanOptions = {},
): AsyncGenerator<Piece> {
  const o = {
    windowSize: options.windowSize ?? DEFAULT_WINDOW,
    maxGap: options.maxGap ?? DEFAULT_GAP,
    readAhead: Math.max(1, options.readAhead ?? DEFAULT_READ_AHEAD),
    forwardOnly: options.forwardOnly ?? false,
  };
  const controller = new AbortController();
  const outer = options.signal;
  const onAbort = () => controller.abort(outer?.reason);
  outer?.addEventListener("abort", onAbort, { once: true });
  if (outer?.aborted) onAbort();
  const signal = controller.signal;
  const queue: { group: Group; bytes: Promise<Uint8Array | undefined>; buffer?: Uint8Array }[] = [];
  // Recycled window buffers; windows larger than windowSize (one big compressed extent) are not pooled.
  const spare: Uint8Array[] = [];
  const recycle = options.recycle ?? false;
  const lag = Math.max(0, options.recycleLag ?? 0);
  // Windows read through, each with the count of data bytes yielded when its last piece went out.
  const retired: { buffer: Uint8Array; at: number }[] = [];
  let yielded = 0;
  const groups = planGroups(map, o, signal)[Symbol.asyncIterator]();
  let done = false;
  let closed = false;
  // Called when the planner has queued a window (or finished a round): the consumer waiting for one.
  let wake: (() => void) | undefined;
  const fill = async () => {
    while (!done && !closed && queue.length < o.readAhead) {
      while (retired.length > 0 && yielded - (retired[0]?.at ?? 0) >= lag) {
        spare.push((retired.shift() as { buffer: Uint8Array }).buffer);
      }
      const next = await groups.next();
      if (next.done) {
        done = true;
        break;
      }
      // Closed while the planner waited for a metadata read: nothing more is read.
      if (closed) break;
      const group = next.value;
      const length = group.hostEnd - group.hostStart;
      const buffer =
        recycle && group.hostStart >= 0 && length <= o.windowSize
          ? (spare.pop() ?? new Uint8Array(windowBuffers.take(o.windowSize)))
          : undefined;
      const bytes =
        group.hostStart < 0
          ? Promise.resolve(undefined)
          : data.read(group.hostStart, length, signal, buffer?.subarray(0, length));
      // Observed later; this keeps an early failure from being reported as unhandled.
      bytes.catch(() => undefined);
      queue.push(buffer ? { group, bytes, buffer } : { group, bytes });
      wake?.();
    }
  };
  // The planner runs beside the consumer rather than in its path: a metadata read (the next qcow2
  // L2 table, the next stretch of a VHD's BAT) then waits while the windows already read are yielded,
  // instead of stalling the output. A failure of the planner is reported once those are out.
  let planning: Promise<void> | undefined;
  let planFailure: { error: unknown } | undefined;
  const plan = (): Promise<void> | undefined => {
    if (!planning && !done && !closed && !planFailure && queue.length < o.readAhead) {
      planning = fill()
        .catch((error: unknown) => {
          planFailure = { error };
        })
        .finally(() => {
          planning = undefined;
          // The consumer may have taken a window while this round was finishing.
          plan();
        });
    }
    return planning;
  };
  const decodeAhead = Math.max(1, options.decodeAhead ?? DEFAULT_DECODE_AHEAD);
  let syncDecodes = false;
  // Decodes started for the head window's items, by item index; observed in order as they are yielded.
  const decoding = new Map<number, Promise<Uint8Array>>();
  /** The next window read, waiting for the planner when none is queued; undefined after the last. */
  const nextWindow = async (): Promise<(typeof queue)[number] | undefined> => {
    for (;;) {
      signal.throwIfAborted();
      const head = queue.shift();
      if (head) return head;
      if (planFailure) throw planFailure.error;
      if (done) return undefined;
      const round = plan();
      if (!round) throw new Error("unreachable: nothing queued and no planner running");
      await new Promise<void>((resolve) => {
        wake = resolve;
        void round.then(resolve);
      });
      wake = undefined;
    }
  };
  /** The pieces of one window's items, decoding encoded ones up to `decodeAhead` bytes ahead. */
  async function* windowPieces(group: Group, window: Uint8Array | undefined): AsyncGenerator<Piece> {
    const items = group.items;
    let started = 0;
    let decodingBytes = 0;
    /** Starts decodes after item `at` while they hold less than `decodeAhead` guest bytes. */
    const startDecodes = (at: number) => {
      if (!window) return;
      started = Math.max(started, at);
      while (started < items.length && (started === at || (!syncDecodes && decodingBytes < decodeAhead))) {
        const e = items[started];
        if (e?.kind === "encoded") {
          const from = e.host - group.hostStart;
          const { result: p, sync } = startDecode(e, window.subarray(from, from + e.hostLength));
          if (sync) syncDecodes = true;
          // Observed when its turn comes; this keeps a failure ahead of it from being reported as unhandled.
          p.catch(() => undefined);
          decoding.set(started, p);
          decodingBytes += e.length;
        }
        started++;
      }
    };
    for (let i = 0; i < items.length; i++) {
      const e = items[i] as Extent;
      signal.throwIfAborted();
      if (e.kind === "zero") {
        yield { length: e.length };
        continue;
      }
      if (!window) throw new Error("unreachable: a group with host data has no window");
      const from = e.host - group.hostStart;
      yielded += e.length;
      if (e.kind === "data") {
        yield { length: e.length, bytes: window.subarray(from, from + e.length), host: e.host };
        continue;
      }
      startDecodes(i);
      const bytes = await (decoding.get(i) as Promise<Uint8Array>);
      decoding.delete(i);
      decodingBytes -= e.length;
      startDecodes(i + 1);
      yield { length: e.length, bytes };
    }
  }
  try {
    plan();
    for (let head = await nextWindow(); head !== undefined; head = await nextWindow()) {
      plan();
      yield* windowPieces(head.group, await head.bytes);
      // The consumer has asked for the piece after this window's last: its buffer is free again once
      // `lag` more bytes of data have gone out.
      if (head.buffer) retired.push({ buffer: head.buffer, at: yielded });
    }
  } finally {
    closed = true;
    outer?.removeEventListener("abort", onAbort);
    controller.abort();
    await planning;
    await Promise.allSettled([...queue.map((q) => q.bytes), ...decoding.values()]);
    await groups.return?.(undefined).catch(() => undefined);
    // Windows never yielded, and those past the lag, are read by nobody: kept for the next conversion.
    // So are the retired ones when there is no lag (the consumer, having asked for what comes after the
    // last piece, is done with every piece); within a lag it may still hold some.
    for (const q of queue) if (q.buffer) spare.push(q.buffer);
    if (lag === 0) for (const r of retired.splice(0)) spare.push(r.buffer);
    for (const w of spare) windowBuffers.give(w.buffer as ArrayBuffer);
    spare.length = 0;
  }
}
