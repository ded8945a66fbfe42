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

/** A cluster's bytes, read as the frame's little-endian fields; a read past the end is a truncation. */
class FrameBytes {
  constructor(readonly bytes: Uint8Array) {}

  at(i: number): number {
    if (i >= this.bytes.length) throw new CorruptImageError("a zstd cluster is truncated");
    return this.bytes[i] as number;
  }

  le(i: number, n: number): number {
    let v = 0;
    for (let k = n - 1; k >= 0; k--) v = v * 256 + this.at(i + k);
    return v;
  }
}

/** Checks the frame header against a cluster of `size` bytes; gives where the blocks start and the checksum flag. */
function readFrameHeader(b: FrameBytes, size: number): { end: number; checksum: number } {
  if (b.le(0, 4) !== MAGIC) throw new CorruptImageError("a zstd cluster does not start with a zstd frame");
  const fhd = b.at(4);
  const singleSegment = (fhd >> 5) & 1;
  const fcsFlag = fhd >> 6;
  if (fhd & 8) throw new CorruptImageError("a zstd cluster's frame header has its reserved bit set");
  if ((fhd & 3) !== 0) throw new CorruptImageError("a zstd cluster names a dictionary");
  let pos = 5;
  if (!singleSegment) {
    const wd = b.at(pos++);
    const base = 2 ** (10 + (wd >> 3));
    if (base + (base / 8) * (wd & 7) > Math.max(MAX_WINDOW, size)) {
      throw new CorruptImageError("a zstd cluster asks for a window larger than 8 MiB");
    }
  }
  const fcsBytes = fcsFlag === 0 ? singleSegment : 2 ** fcsFlag;
  if (fcsBytes === 0) throw new CorruptImageError("a zstd cluster does not declare its size");
  const contentSize = b.le(pos, fcsBytes) + (fcsBytes === 2 ? 256 : 0);
  if (contentSize !== size) {
    throw new CorruptImageError(`a zstd cluster declares ${contentSize} bytes, expected ${size}`);
  }
  return { end: pos + fcsBytes, checksum: (fhd >> 2) & 1 };
}

/** Walks the frame's blocks from `pos`, counting what they regenerate; gives where the last one ends. */
function readBlocks(b: FrameBytes, pos: number, size: number): number {
  let produced = 0;
  for (;;) {
    const header = b.le(pos, 3);
    pos += 3;
    const type = (header >> 1) & 3;
    const blockSize = header >>> 3;
    if (type === 3) throw new CorruptImageError("a zstd cluster has a block of the reserved type");
    if (blockSize > MAX_BLOCK) throw new CorruptImageError("a zstd cluster has a block over 128 KiB");
    // Raw and RLE blocks regenerate their size; a compressed one at most 128 KiB, counted when decoded.
    if (type !== 2) produced += blockSize;
    if (produced > size) throw new CorruptImageError(`a zstd cluster holds more than ${size} bytes`);
    pos += type === 1 ? 1 : blockSize;
    if (pos > b.bytes.length) throw new CorruptImageError("a zstd cluster is truncated");
    if (header & 1) return pos;
  }
}

/** The length of the Zstandard frame at the start of `bytes`, whose content must be `size` bytes. */
export function zstdFrameLength(bytes: Uint8Array, size: number): number {
  const b = new FrameBytes(bytes);
  const header = readFrameHeader(b, size);
  const pos = readBlocks(b, header.end, size) + header.checksum * 4;
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
