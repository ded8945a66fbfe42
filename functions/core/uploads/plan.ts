/**
 * Multipart plan arithmetic. S3's limits (the same in MinIO): parts of 5 MiB to 5 GiB (the last part may be
 * smaller), at most 10,000 parts, objects up to 5 TiB, single PUTs up to 5 GiB.
 */
export const MIB = 1024 * 1024;
export const GIB = 1024 * MIB;
export const MIN_PART_SIZE = 5 * MIB;
export const MAX_PART_SIZE = 5 * GIB;
export const MAX_PARTS = 10_000;
export const MAX_OBJECT_SIZE = 5 * 1024 * GIB;
export const MAX_SINGLE_PUT = 5 * GIB;
/** Parts Hangar prefers when the size allows: fewer requests than 5 MiB parts, little memory per part. */
export const DEFAULT_MIN_PART_SIZE = 16 * MIB;

/** Does an upload of `size` bytes get a multipart plan? Above 5 GiB it must, whatever the threshold. */
export function usesMultipart(size: number, threshold: number): boolean {
  return size > Math.min(threshold, MAX_SINGLE_PUT);
}

/**
 * The part size of a client's multipart upload plan for `size` bytes: at least `minPartSize`, large enough for ≤ 10,000 parts,
 * rounded up to whole MiB so clients can reason about it.
 */
export function uploadPartSize(size: number, minPartSize = DEFAULT_MIN_PART_SIZE): number {
  if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_OBJECT_SIZE) {
    throw new RangeError(`upload size ${size} is outside 1..${MAX_OBJECT_SIZE}`);
  }
  if (minPartSize < MIN_PART_SIZE || minPartSize > MAX_PART_SIZE) {
    throw new RangeError(
      `minimum part size ${minPartSize} is outside S3's ${MIN_PART_SIZE}..${MAX_PART_SIZE}`,
    );
  }
  const needed = Math.max(minPartSize, Math.ceil(size / MAX_PARTS));
  return Math.ceil(needed / MIB) * MIB;
}

/** Number of parts of `partSize` that hold `size` bytes. */
export const partCountFor = (size: number, partSize: number): number => Math.ceil(size / partSize);

/** Bytes in part `partNumber` (1-based): every part is `partSize` except a shorter last one. */
export function partLength(size: number, partSize: number, partNumber: number): number {
  const count = partCountFor(size, partSize);
  if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > count) {
    throw new RangeError(`part ${partNumber} is outside 1..${count}`);
  }
  return partNumber < count ? partSize : size - partSize * (count - 1);
}

/** Byte offset of part `partNumber` (1-based) in the whole upload. */
export const partOffset = (partSize: number, partNumber: number): number => (partNumber - 1) * partSize;

export interface PartLayout {
  partSize: number;
  partCount: number;
}

/** The layout of an upload of `size` bytes. */
export function layoutFor(size: number, minPartSize = DEFAULT_MIN_PART_SIZE): PartLayout {
  const partSize = uploadPartSize(size, minPartSize);
  return { partSize, partCount: partCountFor(size, partSize) };
}

/** Compresses sorted part numbers into ranges for messages: [1,2,3,7] → "1-3, 7". */
export function describeParts(numbers: readonly number[]): string {
  const sorted = [...numbers].sort((a, b) => a - b);
  const out: string[] = [];
  let i = 0;
  while (i < sorted.length) {
    const start = sorted[i] as number;
    let end = start;
    while (i + 1 < sorted.length && sorted[i + 1] === end + 1) end = sorted[++i] as number;
    out.push(start === end ? String(start) : `${start}-${end}`);
    i++;
  }
  return out.join(", ");
}
