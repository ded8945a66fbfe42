import { Decompress } from "fzstd";
import { CorruptImageError } from "./errors.ts";

// A qcow2 zstd cluster is one Zstandard frame (RFC 8878) of exactly one cluster of content, packed
// against the next cluster's frame: QEMU writes it single-segment with its content size and without
// a dictionary or checksum. The frame is checked and measured here before the decoder sees a byte,
// because a frame header sizes the decoder's window (up to 2 GiB) and a run of 3-byte RLE blocks can
// claim gigabytes; the decoder then gets only this frame and its output is counted block by block.

const MAGIC = 0xfd2fb528;
const MAX_BLOCK = 128 << 10;
/** A frame that is not single-segment may ask for a window up to this; QEMU's never do. */
const MAX_WINDOW = 8 << 20;

/** The length of the Zstandard frame at the start of `bytes`, whose content must be `size` bytes. */
export function zstdFrameLength(bytes: Uint8Array, size: number): number {
  const at = (i: number) => {
    if (i >= bytes.length) throw new CorruptImageError("a zstd cluster is truncated");
    return bytes[i] as number;
  };
  const le = (i: number, n: number) => {
    let v = 0;
    for (let k = n - 1; k >= 0; k--) v = v * 256 + at(i + k);
    return v;
  };
  if (le(0, 4) !== MAGIC) throw new CorruptImageError("a zstd cluster does not start with a zstd frame");
  const fhd = at(4);
  const singleSegment = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  const fcsFlag = fhd >> 6;
  if (fhd & 8) throw new CorruptImageError("a zstd cluster's frame header has its reserved bit set");
  if (dictFlag !== 0) throw new CorruptImageError("a zstd cluster names a dictionary");
  let pos = 5;
  if (!singleSegment) {
    const wd = at(pos++);
    const base = 2 ** (10 + (wd >> 3));
    if (base + (base / 8) * (wd & 7) > Math.max(MAX_WINDOW, size)) {
      throw new CorruptImageError("a zstd cluster asks for a window larger than 8 MiB");
    }
  }
  const fcsBytes = fcsFlag === 0 ? singleSegment : 2 ** fcsFlag;
  if (fcsBytes === 0) throw new CorruptImageError("a zstd cluster does not declare its size");
  const contentSize = le(pos, fcsBytes) + (fcsBytes === 2 ? 256 : 0);
  pos += fcsBytes;
  if (contentSize !== size) {
    throw new CorruptImageError(`a zstd cluster declares ${contentSize} bytes, expected ${size}`);
  }
  let produced = 0;
  for (;;) {
    const header = le(pos, 3);
    pos += 3;
    const last = header & 1;
    const type = (header >> 1) & 3;
    const blockSize = header >>> 3;
    if (type === 3) throw new CorruptImageError("a zstd cluster has a block of the reserved type");
    if (blockSize > MAX_BLOCK) throw new CorruptImageError("a zstd cluster has a block over 128 KiB");
    // Raw and RLE blocks regenerate their size; a compressed one at most 128 KiB, counted when decoded.
    if (type !== 2) produced += blockSize;
    if (produced > size) throw new CorruptImageError(`a zstd cluster holds more than ${size} bytes`);
    pos += type === 1 ? 1 : blockSize;
    if (pos > bytes.length) throw new CorruptImageError("a zstd cluster is truncated");
    if (last) break;
  }
  pos += checksum * 4;
  if (pos > bytes.length) throw new CorruptImageError("a zstd cluster is truncated");
  return pos;
}

/** Decodes the qcow2 zstd cluster at the start of `stored` into exactly `size` bytes. */
export function decodeZstdCluster(stored: Uint8Array, size: number): Uint8Array {
  const frame = stored.subarray(0, zstdFrameLength(stored, size));
  const out = new Uint8Array(size);
  let filled = 0;
  const decoder = new Decompress((chunk) => {
    if (filled + chunk.length > size)
      throw new CorruptImageError(`a zstd cluster holds more than ${size} bytes`);
    out.set(chunk, filled);
    filled += chunk.length;
  });
  try {
    decoder.push(frame, true);
  } catch (err) {
    if (err instanceof CorruptImageError) throw err;
    throw new CorruptImageError("a zstd cluster cannot be decoded", { cause: err });
  }
  if (filled !== size) throw new CorruptImageError(`a zstd cluster holds ${filled} bytes, expected ${size}`);
  return out;
}
