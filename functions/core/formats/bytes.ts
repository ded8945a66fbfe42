import { MalformedImageError } from "./errors.ts";

/**
 * Bounds-checked field readers over a captured region. Every read names the format so a short or
 * hostile header surfaces as a `MalformedImageError`, never as a RangeError or a silent `undefined`.
 */
export class FieldReader {
  private readonly view: DataView;
  constructor(
    readonly bytes: Uint8Array,
    readonly format: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get length(): number {
    return this.bytes.length;
  }

  /** Throws unless `[offset, offset + length)` lies inside the buffer. */
  need(offset: number, length: number, what: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new MalformedImageError(this.format, `${what}: invalid range ${offset}+${length}`);
    }
    if (offset + length > this.bytes.length) {
      throw new MalformedImageError(
        this.format,
        `${what}: needs bytes ${offset}..${offset + length} but only ${this.bytes.length} are available (truncated)`,
      );
    }
  }

  u8(offset: number, what: string): number {
    this.need(offset, 1, what);
    return this.view.getUint8(offset);
  }
  u16be(offset: number, what: string): number {
    this.need(offset, 2, what);
    return this.view.getUint16(offset, false);
  }
  u16le(offset: number, what: string): number {
    this.need(offset, 2, what);
    return this.view.getUint16(offset, true);
  }
  u32be(offset: number, what: string): number {
    this.need(offset, 4, what);
    return this.view.getUint32(offset, false);
  }
  u32le(offset: number, what: string): number {
    this.need(offset, 4, what);
    return this.view.getUint32(offset, true);
  }
  u64be(offset: number, what: string): bigint {
    this.need(offset, 8, what);
    return this.view.getBigUint64(offset, false);
  }
  u64le(offset: number, what: string): bigint {
    this.need(offset, 8, what);
    return this.view.getBigUint64(offset, true);
  }
  slice(offset: number, length: number, what: string): Uint8Array {
    this.need(offset, length, what);
    return this.bytes.subarray(offset, offset + length);
  }
  /** Latin-1 text, cut at the first NUL (header strings are NUL-padded). */
  ascii(offset: number, length: number, what: string): string {
    const raw = this.slice(offset, length, what);
    const nul = raw.indexOf(0);
    return latin1(nul === -1 ? raw : raw.subarray(0, nul));
  }
}

/** Bytes as Latin-1 text; every byte maps to one code unit, so nothing is lost or rejected. */
export function latin1(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    out += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return out;
}

/** True when `bytes` holds `magic` at `offset` (false if the buffer is too short). */
export function hasBytesAt(bytes: Uint8Array, offset: number, magic: Uint8Array): boolean {
  if (offset < 0 || offset + magic.length > bytes.length) return false;
  for (let i = 0; i < magic.length; i++) {
    if (bytes[offset + i] !== magic[i]) return false;
  }
  return true;
}

/** Latin-1 text as bytes (magic strings). */
export function asciiBytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

/** A bigint offset/size as a safe number, or a `MalformedImageError` naming the field. */
export function toSafeNumber(value: bigint, format: string, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new MalformedImageError(format, `${what} ${value} is beyond any supported file size`);
  }
  return Number(value);
}

/** Shortens attacker-controlled text before it goes into a message or a log line. */
export function quoteForMessage(text: string, max = 120): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what we strip
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
  return JSON.stringify(clean.length > max ? `${clean.slice(0, max)}…` : clean);
}

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const SECTOR = 512;
export const TiB = 1024 * 1024 * 1024 * 1024;
