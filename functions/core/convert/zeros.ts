/**
 * Bytes known to be zeros. The converter hands runs of zeros over as views of one zero-filled buffer it
 * never writes to; a consumer (the store's writer, which copies a part of zeros inside storage instead
 * of sending it) tells such a view by its buffer, without reading it. Anything else can be scanned.
 */

/** Buffers that hold only zeros and are never written to. */
const zeroBuffers = new WeakSet<ArrayBufferLike>();

/** A buffer of `size` zeros, known as such to `isZeros`. Nobody may write to it. */
export function zeroBuffer(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  zeroBuffers.add(bytes.buffer);
  return bytes;
}

/** Compared against in blocks; a block of other bytes stops the scan at its first byte that is not zero. */
const BLOCK = 64 * 1024;
let block: Uint8Array | undefined;

/**
 * Whether `bytes` are all zeros: at once for a view of a `zeroBuffer`, otherwise by comparing them
 * with zeros block by block (memcmp: a few bytes for data, about 0.05 s per GiB of zeros).
 */
export function isZeros(bytes: Uint8Array): boolean {
  if (zeroBuffers.has(bytes.buffer)) return true;
  if (bytes.byteLength === 0) return true;
  // Data usually says so in its first bytes: look at them before comparing whole blocks.
  if (bytes[0] !== 0 || bytes[bytes.byteLength - 1] !== 0) return false;
  block ??= new Uint8Array(BLOCK);
  for (let at = 0; at < bytes.byteLength; at += BLOCK) {
    const n = Math.min(BLOCK, bytes.byteLength - at);
    if (Buffer.compare(bytes.subarray(at, at + n), block.subarray(0, n)) !== 0) return false;
  }
  return true;
}
