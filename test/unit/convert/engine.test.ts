import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { DiskMap, Extent } from "../../../functions/core/convert/disk-map.ts";
import { pieces } from "../../../functions/core/convert/engine.ts";
import { CorruptImageError } from "../../../functions/core/convert/errors.ts";
import { memoryRange } from "./helpers.ts";

const STORED = 16;

/**
 * A map of `count` encoded blocks of `length` guest bytes (every fifth a run of zeros, every seventh
 * stored verbatim) whose decoders finish after a delay chosen by `delay`, out of order. Decoded block
 * i is filled with i & 0xff. It counts the decodes running at once and the guest bytes they hold.
 */
function slowMap(count: number, length: number, delay: (i: number) => number, failAt = -1) {
  const stats = { running: 0, maxRunning: 0, runningBytes: 0, maxRunningBytes: 0, started: 0 };
  const stored = new Uint8Array(count * STORED);
  const extents: Extent[] = [];
  for (let i = 0; i < count; i++) {
    if (i % 5 === 4) {
      extents.push({ kind: "zero", length });
      continue;
    }
    if (i % 7 === 6) {
      stored.fill(i & 0xff, i * STORED, (i + 1) * STORED);
      extents.push({ kind: "data", host: i * STORED, length: STORED });
      continue;
    }
    extents.push({
      kind: "encoded",
      host: i * STORED,
      hostLength: STORED,
      length,
      decode: async () => {
        stats.started++;
        stats.running++;
        stats.runningBytes += length;
        stats.maxRunning = Math.max(stats.maxRunning, stats.running);
        stats.maxRunningBytes = Math.max(stats.maxRunningBytes, stats.runningBytes);
        try {
          await new Promise((resolve) => setTimeout(resolve, delay(i)));
          if (i === failAt) throw new Error("inflate failed");
          return new Uint8Array(length).fill(i & 0xff);
        } finally {
          stats.running--;
          stats.runningBytes -= length;
        }
      },
    });
  }
  const virtualSize = extents.reduce((n, e) => n + e.length, 0);
  const map: DiskMap = {
    format: "qcow2",
    virtualSize,
    async *batches() {
      // Two batches, so decodes cross a metadata table boundary too.
      const half = extents.length >> 1;
      yield extents.slice(0, half);
      yield extents.slice(half);
    },
  };
  return { map, range: memoryRange(stored), extents, stats };
}

/** The guest bytes the map stands for, built from its extents directly. */
function expected(extents: Extent[]): number[] {
  const out: number[] = [];
  extents.forEach((e, i) => {
    const n = e.length;
    for (let k = 0; k < n; k++) out.push(e.kind === "zero" ? 0 : i & 0xff);
  });
  return out;
}

async function collect(source: AsyncIterable<{ length: number; bytes?: Uint8Array }>): Promise<number[]> {
  const out: number[] = [];
  for await (const p of source) {
    if (p.bytes) {
      expect(p.bytes.length).toBe(p.length);
      out.push(...p.bytes);
    } else for (let k = 0; k < p.length; k++) out.push(0);
  }
  return out;
}

describe("encoded blocks are decoded ahead, several at once, and yielded in order", () => {
  it("keeps guest order whatever order the decodes finish in, within decodeAhead", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          count: fc.integer({ min: 1, max: 60 }),
          length: fc.integer({ min: 1, max: 64 }),
          decodeAhead: fc.integer({ min: 1, max: 1024 }),
          windowSize: fc.integer({ min: STORED, max: 512 }),
          delays: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 60, maxLength: 60 }),
        }),
        async ({ count, length, decodeAhead, windowSize, delays }) => {
          const { map, range, extents, stats } = slowMap(count, length, (i) => delays[i] ?? 0);
          const out = await collect(pieces(map, range, { decodeAhead, windowSize, maxGap: 0 }));
          expect(out).toEqual(expected(extents));
          // A decode is started while those before it hold less than decodeAhead, or alone.
          expect(stats.maxRunningBytes).toBeLessThan(Math.max(decodeAhead, length) + length);
        },
      ),
      { numRuns: 60 },
    );
  });

  it("runs many decodes at once by default, and one at a time with decodeAhead 1", async () => {
    const wide = slowMap(40, 1024, () => 2);
    await collect(pieces(wide.map, wide.range));
    expect(wide.stats.maxRunning).toBeGreaterThan(8);

    const serial = slowMap(40, 1024, () => 1);
    await collect(pieces(serial.map, serial.range, { decodeAhead: 1 }));
    expect(serial.stats.maxRunning).toBe(1);
  });

  it("reports a failed decode at its place, after every block before it", async () => {
    // Block 12 fails while later ones, already started, are still running or have finished.
    const { map, range, extents, stats } = slowMap(40, 8, (i) => (i === 12 ? 5 : 0), 12);
    const got: number[] = [];
    const run = async () => {
      for await (const p of pieces(map, range)) {
        if (p.bytes) got.push(...p.bytes);
        else for (let k = 0; k < p.length; k++) got.push(0);
      }
    };
    await expect(run()).rejects.toBeInstanceOf(CorruptImageError);
    expect(got).toEqual(expected(extents.slice(0, 12)));
    expect(stats.started).toBeGreaterThan(13);
    // Nothing is still running once the generator has returned.
    expect(stats.running).toBe(0);
  });

  it("waits for the decodes it started when the consumer stops early", async () => {
    const { map, range, stats } = slowMap(40, 8, () => 3);
    for await (const p of pieces(map, range)) {
      if (p.bytes) break;
    }
    expect(stats.started).toBeGreaterThan(1);
    expect(stats.running).toBe(0);
  });
});

/**
 * Four data extents, each a window of its own, then a second batch whose metadata read (`gate`) is
 * answered only when `open` is called. `events` records the pieces yielded and the gate opening. The
 * planner holds a batch's last window until the next batch is read (it may continue it).
 */
function gatedMap() {
  const stored = new Uint8Array(4 * 4096).map((_, i) => (i >> 12) + 1);
  const events: string[] = [];
  let open = () => {};
  const gate = new Promise<void>((resolve) => {
    open = () => {
      events.push("metadata");
      resolve();
    };
  });
  let closedAfterGate = false;
  const map: DiskMap = {
    format: "qcow2",
    virtualSize: 4 * 16 + 64,
    async *batches() {
      yield [0, 1, 2, 3].map((i): Extent => ({ kind: "data", host: i * 4096, length: 16 }));
      await gate;
      closedAfterGate = true;
      yield [{ kind: "zero", length: 64 }];
    },
  };
  return { map, range: memoryRange(stored), events, open: () => open(), gateDone: () => closedAfterGate };
}

describe("metadata reads run beside the output", () => {
  it("yields the windows already read while the next table is still being read", async () => {
    const { map, range, events, open } = gatedMap();
    // Were the planner in the consumer's path, the second window would wait for the gate, which this
    // timer then opens: the events would show it right after the first piece.
    const fallback = setTimeout(open, 500);
    try {
      let n = 0;
      for await (const p of pieces(map, range, { windowSize: 16, maxGap: 0, readAhead: 3 })) {
        events.push(p.bytes ? `data ${p.bytes[0]}` : `zero ${p.length}`);
        if (++n === 3) open();
      }
    } finally {
      clearTimeout(fallback);
    }
    expect(events).toEqual(["data 1", "data 2", "data 3", "metadata", "data 4", "zero 64"]);
  });

  it("stops the planner when the consumer returns while a metadata read is pending", async () => {
    const { map, range, open, gateDone } = gatedMap();
    const got: number[] = [];
    const it = pieces(map, range, { windowSize: 16, maxGap: 0, readAhead: 3 });
    for await (const p of it) {
      got.push(p.bytes?.[0] ?? 0);
      if (got.length === 2) {
        // The generator's return waits for the planner, which waits for the gate.
        setTimeout(open, 10);
        break;
      }
    }
    expect(got).toEqual([1, 2]);
    expect(gateDone()).toBe(true);
  });
});

describe("synchronous decoders", () => {
  it("are called when their block's turn comes, not ahead of it", async () => {
    const count = 40;
    const calls: number[] = [];
    const yieldedBefore: number[] = [];
    let yieldedCount = 0;
    const extents: Extent[] = Array.from({ length: count }, (_, i) => ({
      kind: "encoded" as const,
      host: i * STORED,
      hostLength: STORED,
      length: 8,
      decode: () => {
        calls.push(i);
        yieldedBefore.push(yieldedCount);
        return new Uint8Array(8).fill(i);
      },
    }));
    const map: DiskMap = {
      format: "vhd",
      virtualSize: count * 8,
      async *batches() {
        yield extents;
      },
    };
    const got: number[] = [];
    for await (const p of pieces(map, memoryRange(new Uint8Array(count * STORED)))) {
      got.push(p.bytes?.[0] ?? -1);
      yieldedCount++;
    }
    expect(got).toEqual(Array.from({ length: count }, (_, i) => i));
    expect(calls).toEqual(got);
    // Block i is decoded once the i - 1 before it are out (the first decode learns it is synchronous).
    expect(yieldedBefore.slice(1)).toEqual(Array.from({ length: count - 1 }, (_, i) => i));
  });
});
