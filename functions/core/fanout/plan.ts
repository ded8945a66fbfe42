import { HangarError } from "../errors.ts";

/**
 * How a fanned-out import is cut: the raw output of the image in ranges, one worker each, every range
 * a run of whole parts of the stored image's one multipart upload. Raw output offsets are fixed by the
 * guest address, so a range's bytes and part numbers are known before any worker starts. Pure data.
 */

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

/** S3's multipart limits: every part but the last at least 5 MiB, at most 5 GiB, at most 10,000 parts. */
export const S3_MIN_PART_BYTES = 5 * MiB;
export const S3_MAX_PART_BYTES = 5 * GiB;
export const S3_MAX_PARTS = 10_000;
/** S3's largest object: the largest raw image a fan-out can store. */
export const S3_MAX_OBJECT_BYTES = 5 * TiB;

/**
 * At most this many ranges, so the plan fits a Step Functions state (256 KiB: at most about 90 bytes of
 * JSON a range) and the execution's history (25,000 events; an inline Map iteration with one Task logs 7).
 */
export const MAX_RANGES = 1000;

/**
 * Default `HANGAR_FANOUT_THRESHOLD`: the virtual size above which an import fans out. The slowest
 * import `npm run bench` measured (bench/results.json, 2026-11-29: a zstd-compressed qcow2, 1 GiB
 * virtual, 16.56 s end to end, i.e. 64.9 MB/s) fills Lambda's 900 s with 900 × 64.9 MB/s = 58.4 GB
 * (54.4 GiB); with a 2× margin (slower S3 than loopback MinIO, a busy host, retries) that is 27.2 GiB,
 * rounded down to 27 GiB. docs/scale.md has the same arithmetic.
 */
export const DEFAULT_FANOUT_THRESHOLD = 27 * GiB;

/**
 * Default `HANGAR_FANOUT_RANGE_BYTES`: one worker's range. At the slowest measured rate 4 GiB take
 * 4 × 1.074 GB / 64.9 MB/s = 66 s, far inside a worker's 900 s; smaller ranges mean more workers at
 * once for the same Lambda time (a worker's fixed cost is reading the source's tables for its range).
 */
export const DEFAULT_FANOUT_RANGE_BYTES = 4 * GiB;

/**
 * Default `HANGAR_FANOUT_WORKERS`: ranges converted at once. Step Functions runs at most 40 iterations
 * of an inline Map at once whatever is asked; each is a concurrent Lambda execution.
 */
export const DEFAULT_FANOUT_WORKERS = 40;

/**
 * Default `HANGAR_FANOUT_HASH_LINK_BYTES`: bytes one link of the hash chain reads. md5 + sha512 run at
 * about 372 MB/s in one thread (functions/core/import/digests.ts): 50 GiB take about 145 s, and still
 * under 400 s if reading the object from S3 runs at only 140 MB/s, inside a link's 900 s.
 */
export const DEFAULT_HASH_LINK_BYTES = 50 * GiB;

/** Whether an image of `virtualSize` bytes is imported by the fan-out rather than one invocation. */
export function shouldFanOut(virtualSize: number, threshold: number): boolean {
  return virtualSize > threshold;
}

/** One worker's share: output bytes `[offset, offset + length)`, stored as parts `firstPart…lastPart`. */
export interface FanoutRange {
  readonly index: number;
  readonly offset: number;
  readonly length: number;
  /** 1-based S3 part numbers, contiguous across ranges. */
  readonly firstPart: number;
  readonly lastPart: number;
}

export interface FanoutPlan {
  readonly virtualSize: number;
  /** Part size used (grown from the one asked for when 10,000 parts would not hold the image). */
  readonly partSize: number;
  /** Range size used (grown when the parts grew or there would be more than MAX_RANGES ranges). */
  readonly rangeBytes: number;
  readonly partsTotal: number;
  readonly ranges: readonly FanoutRange[];
}

/** A fan-out that cannot be planned; `reason` says which limit. */
export class FanoutPlanError extends HangarError {
  readonly reason: string;
  constructor(message: string, reason: string) {
    super(message);
    this.reason = reason;
  }
}

export interface PlanInput {
  readonly virtualSize: number;
  /** `HANGAR_FANOUT_RANGE_BYTES`: a multiple of `partSize`, at least 5 MiB. */
  readonly rangeBytes: number;
  /** `HANGAR_PART_SIZE`: the stored image's multipart part size. */
  readonly partSize: number;
}

const roundUp = (n: number, unit: number) => Math.ceil(n / unit) * unit;

function checkInput({ virtualSize, rangeBytes, partSize }: PlanInput): void {
  for (const [name, v] of [
    ["virtual size", virtualSize],
    ["range size", rangeBytes],
    ["part size", partSize],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0)
      throw new FanoutPlanError(`Invalid ${name} ${v}`, "FANOUT_INVALID_INPUT");
  }
  if (partSize < S3_MIN_PART_BYTES || partSize > S3_MAX_PART_BYTES) {
    throw new FanoutPlanError(`Part size ${partSize} is outside S3's 5 MiB to 5 GiB`, "FANOUT_INVALID_INPUT");
  }
  if (rangeBytes < S3_MIN_PART_BYTES || rangeBytes % partSize !== 0) {
    throw new FanoutPlanError(
      `Range size ${rangeBytes} must be at least 5 MiB and a multiple of the part size ${partSize}`,
      "FANOUT_INVALID_INPUT",
    );
  }
  if (virtualSize === 0)
    throw new FanoutPlanError("An empty image has nothing to fan out", "FANOUT_INVALID_INPUT");
  if (virtualSize > S3_MAX_OBJECT_BYTES) {
    throw new FanoutPlanError(
      `A raw image of ${virtualSize} bytes exceeds S3's largest object (${S3_MAX_OBJECT_BYTES} bytes)`,
      "FANOUT_TOO_LARGE",
    );
  }
}

/**
 * Cuts `virtualSize` bytes of raw output into ranges of whole parts. When 10,000 parts of `partSize`
 * cannot hold the image, the part size grows to the smallest multiple of the one asked for that can
 * (and the range size to a multiple of that); when the ranges would be more than MAX_RANGES, the range
 * size grows. Refused (FanoutPlanError) for bad input or an image larger than S3's largest object.
 */
export function planRanges(input: PlanInput): FanoutPlan {
  checkInput(input);
  const { virtualSize } = input;
  const partSize = input.partSize * Math.ceil(virtualSize / (S3_MAX_PARTS * input.partSize));
  if (partSize > S3_MAX_PART_BYTES) {
    // Unreachable while S3_MAX_OBJECT_BYTES ≤ 10,000 × 5 GiB, kept so a change of limits cannot slip by.
    throw new FanoutPlanError(`${virtualSize} bytes need parts over 5 GiB`, "FANOUT_TOO_LARGE");
  }
  const rangeBytes = Math.max(
    roundUp(input.rangeBytes, partSize),
    roundUp(Math.ceil(virtualSize / MAX_RANGES), partSize),
  );
  const partsPerRange = rangeBytes / partSize;
  const ranges: FanoutRange[] = [];
  for (let offset = 0, index = 0; offset < virtualSize; offset += rangeBytes, index++) {
    const length = Math.min(rangeBytes, virtualSize - offset);
    const firstPart = index * partsPerRange + 1;
    ranges.push({ index, offset, length, firstPart, lastPart: firstPart + Math.ceil(length / partSize) - 1 });
  }
  const partsTotal = ranges.at(-1)?.lastPart ?? 0;
  return { virtualSize, partSize, rangeBytes, partsTotal, ranges };
}
