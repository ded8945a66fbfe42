import { CorruptImageError } from "./errors.ts";

/** Largest offset the converters accept: beyond 2^53 numbers lose precision. */
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Converts a 64-bit field to a number, refusing values a JavaScript number cannot hold exactly. */
export function safeNumber(value: bigint, field: string): number {
  if (value > MAX_SAFE || value < 0n) {
    throw new CorruptImageError(`${field} is out of range (${value})`);
  }
  return Number(value);
}

export function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Throws unless `[offset, offset + length)` lies within `[0, limit)`. */
export function checkRange(offset: number, length: number, limit: number, what: string): void {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > limit
  ) {
    throw new CorruptImageError(
      `${what} (offset ${offset}, length ${length}) lies outside the file (${limit})`,
    );
  }
}

export function ascii(bytes: Uint8Array, offset: number, length: number): string {
  let out = "";
  for (let i = offset; i < offset + length && i < bytes.length; i++) {
    out += String.fromCharCode(bytes[i] ?? 0);
  }
  return out;
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && Number.isInteger(Math.log2(n));
}

export function ceilDiv(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}
