/**
 * The streaming inspector: feed it the upload's bytes once, in chunks of any size, then ask for the
 * verdict. It keeps only captured regions (≤ `MAX_CAPTURE_BYTES`, 8 MiB, for the whole inspection)
 * and counters, never the image.
 */
import { CaptureBudget } from "./capture.ts";
import { CHECK, fail, failureMessage, pass } from "./checks.ts";
import { UnsafeImageError, UnsupportedFormatError } from "./errors.ts";
import { GzipInflater, isGzip } from "./gzip.ts";
import { LayerInspection, type LayerOutcome, probeAll } from "./layer-inspection.ts";
import type { CheckResult, InspectionResult, InspectOptions } from "./types.ts";

export interface Inspector {
  /** Feeds the next chunk. Await it: for gzip uploads it resolves once the chunk is inflated. */
  update(chunk: Uint8Array): Promise<void>;
  /** Ends the stream and runs every check; rejects with `UnsafeImageError` or `UnsupportedFormatError`. */
  finish(): Promise<InspectionResult>;
  /** Bytes held for inspection now and at most so far (diagnostics; bounded by `MAX_CAPTURE_BYTES`). */
  readonly capturedBytes: number;
  readonly peakCapturedBytes: number;
  /** Bytes inflated so far from a gzip upload (0 otherwise); stops growing once the `gzip bomb` limit is passed. */
  readonly inflatedBytes: number;
  /**
   * The lowest offset not yet fed whose bytes the verdict depends on, or undefined when, up to the last
   * `TAIL_BYTES`, none does: the caller may then feed zeros instead of reading the object (see
   * `inspectRanges`). Every offset is needed until the stream is known not to be gzip.
   */
  nextWanted(): number | undefined;
}

const RESOLVED: Promise<void> = Promise.resolve();
/** Bytes needed to tell a gzip stream from anything else. */
const SNIFF_BYTES = 3;

/** Creates a streaming inspector for one upload of `opts.totalSize` bytes. */
export function createInspector(opts: InspectOptions): Inspector {
  for (const key of ["totalSize", "maxVirtualSize", "maxGzipRatio"] as const) {
    if (!(Number.isFinite(opts[key]) && opts[key] >= 0))
      throw new RangeError(`${key} must be a non-negative number`);
  }
  const { signal } = opts;
  const budget = new CaptureBudget();
  const outer = new LayerInspection(budget, opts.totalSize);
  let mode: "sniff" | "plain" | "gzip" = "sniff";
  let inner: LayerInspection | undefined;
  let inflater: GzipInflater | undefined;
  let finished = false;
  const onAbort = () => inflater?.destroy();
  signal?.addEventListener("abort", onAbort, { once: true });

  function startGzip(): void {
    const innerLayer = new LayerInspection(budget);
    inner = innerLayer;
    inflater = new GzipInflater(opts.maxGzipRatio * opts.totalSize, (chunk) => innerLayer.push(chunk));
  }

  return {
    get capturedBytes() {
      return budget.captured;
    },
    get peakCapturedBytes() {
      return budget.peak;
    },
    get inflatedBytes() {
      return inflater?.inflated ?? 0;
    },

    nextWanted(): number | undefined {
      return mode === "plain" ? outer.layer.wanted() : outer.layer.position;
    },

    update(chunk: Uint8Array): Promise<void> {
      if (signal?.aborted) return Promise.reject(signal.reason);
      if (finished) return Promise.reject(new Error("inspector: update() after finish()"));
      if (chunk.length === 0) return RESOLVED;
      if (mode === "gzip") {
        outer.layer.push(chunk);
        return (inflater as GzipInflater).write(chunk);
      }
      outer.push(chunk);
      if (mode === "sniff" && outer.layer.position >= SNIFF_BYTES) {
        if (!isGzip(outer.layer.head())) {
          mode = "plain";
          return RESOLVED;
        }
        mode = "gzip";
        startGzip();
        // The sniff ends within the first chunk that reaches 3 bytes, so earlier bytes (≤ 2) are in the head.
        const earlier = outer.layer.head().slice(0, outer.layer.position - chunk.length);
        const gz = inflater as GzipInflater;
        return earlier.length === 0 ? gz.write(chunk) : gz.write(earlier).then(() => gz.write(chunk));
      }
      return RESOLVED;
    },

    async finish(): Promise<InspectionResult> {
      signal?.throwIfAborted();
      if (finished) throw new Error("inspector: finish() called twice");
      finished = true;
      try {
        return await conclude();
      } finally {
        signal?.removeEventListener("abort", onAbort);
        inflater?.destroy();
      }
    },
  };

  async function conclude(): Promise<InspectionResult> {
    const checks: CheckResult[] = [];
    const received = outer.layer.position;
    if (received !== opts.totalSize) {
      const result = fail(
        CHECK.streamLength,
        `the inspector received ${received} bytes but the object has ${opts.totalSize}; the stream is incomplete or not this object`,
      );
      checks.push(result);
      throw new UnsafeImageError(result.name, failureMessage(result), checks);
    }
    checks.push(pass(CHECK.streamLength));
    if (mode !== "gzip") {
      const outcome = outer.conclude(opts.maxVirtualSize, checks);
      return { ...outcome, compression: "none" };
    }
    // The compressed bytes themselves must not read as another format (an ISO descriptor inside a
    // stored deflate block, say): a tool that never unwraps gzip would see that format instead.
    const { supported, unsupported } = probeAll(outer.layer.head(), outer.layer.tail(), received);
    const alsoMatches = [...supported.map((m) => m.name), ...unsupported];
    if (alsoMatches.length > 0) {
      const result = fail(
        CHECK.polyglot,
        `the image is valid as more than one format (gzip, ${alsoMatches.join(", ")}); such images can be read differently by different tools and are refused`,
      );
      checks.push(result);
      throw new UnsafeImageError(result.name, failureMessage(result), checks);
    }
    const gz = inflater as GzipInflater;
    await gz.end();
    signal?.throwIfAborted();
    const limit = opts.maxGzipRatio * opts.totalSize;
    if (gz.overLimit) {
      const result = fail(
        CHECK.gzipBomb,
        `the compressed upload inflates to more than ${opts.maxGzipRatio} times its ${opts.totalSize} bytes (limit ${limit} bytes); inflation was stopped`,
      );
      checks.push(result);
      throw new UnsafeImageError(result.name, failureMessage(result), checks);
    }
    if (gz.error !== undefined) {
      const result = fail(
        CHECK.malformedHeader,
        `gzip: the compressed stream is invalid (${gz.error.message})`,
      );
      checks.push(result);
      throw new UnsafeImageError(result.name, failureMessage(result), checks, { cause: gz.error });
    }
    checks.push(pass(CHECK.gzipBomb, `inflated ${gz.inflated} bytes from ${opts.totalSize}`));
    const innerLayer = inner as LayerInspection;
    if (isGzip(innerLayer.layer.head())) {
      throw new UnsupportedFormatError(
        "gzip",
        "the upload is gzip inside gzip; compress the image only once",
      );
    }
    const outcome: LayerOutcome = innerLayer.conclude(opts.maxVirtualSize, checks);
    return { ...outcome, compression: "gzip" };
  }
}
