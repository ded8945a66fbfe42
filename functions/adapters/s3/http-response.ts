/**
 * The parts of HTTP/1.1 (RFC 9112) a response to a GET needs: its head (status line and header fields)
 * and how its body is framed, plus a decoder for a chunked body. Pure: bytes in, values out.
 */

/** A response that does not follow HTTP/1.1's syntax. */
export class HttpProtocolError extends Error {
  override readonly name = "HttpProtocolError";
}

export interface ResponseHead {
  statusCode: number;
  reason: string;
  /** By lower-case name; a field sent more than once has its values joined with ", ". */
  headers: Record<string, string>;
}

/** How the body after a head ends. */
export type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

const CR = 0x0d;
const LF = 0x0a;
const STATUS_LINE = /^HTTP\/1\.[01] ([1-9]\d\d)(?: (.*))?$/;
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Field values may hold visible characters, spaces, tabs and obs-text; never CR, LF or NUL. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Where the head in `bytes[0, end)` ends (just after its blank line), or -1 while it is incomplete.
 * `from` lets a caller that feeds the bytes in pieces skip what it searched already.
 */
export function findHeadEnd(bytes: Uint8Array, end: number, from = 0): number {
  for (let i = Math.max(3, from + 3); i < end; i++) {
    if (bytes[i] === LF && bytes[i - 1] === CR && bytes[i - 2] === LF && bytes[i - 3] === CR) return i + 1;
  }
  return -1;
}

/** The head in `bytes` (as `findHeadEnd` delimits it, the blank line included). */
export function parseResponseHead(bytes: Uint8Array): ResponseHead {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
  const lines = text.split("\r\n");
  // The head ends with an empty line, which splits into two empty strings.
  if (lines.length < 3 || lines.at(-1) !== "" || lines.at(-2) !== "") {
    throw new HttpProtocolError("the response head does not end with an empty line");
  }
  const status = STATUS_LINE.exec(lines[0] ?? "");
  if (!status) throw new HttpProtocolError(`not an HTTP/1.1 status line: ${JSON.stringify(lines[0])}`);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1, -2)) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon);
    // A line starting with white space continues the one before (obs-fold): refused, as RFC 9112 allows.
    if (colon <= 0 || !FIELD_NAME.test(name)) {
      throw new HttpProtocolError(`not a header field: ${JSON.stringify(line)}`);
    }
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!FIELD_VALUE.test(value)) throw new HttpProtocolError(`a control character in header ${name}`);
    const key = name.toLowerCase();
    const before = headers[key];
    headers[key] = before === undefined ? value : `${before}, ${value}`;
  }
  return { statusCode: Number(status[1]), reason: status[2] ?? "", headers };
}

/** How the body of a response to a GET with this head is delimited (RFC 9112, section 6.3). */
export function bodyFraming(head: ResponseHead): BodyFraming {
  const { statusCode, headers } = head;
  if (statusCode < 200 || statusCode === 204 || statusCode === 304) return { kind: "none" };
  const coding = headers["transfer-encoding"];
  if (coding !== undefined) {
    const last = coding.split(",").at(-1)?.trim().toLowerCase();
    return last === "chunked" ? { kind: "chunked" } : { kind: "close" };
  }
  const length = headers["content-length"];
  if (length === undefined) return { kind: "close" };
  // Repeated (`5, 5`) is allowed when every value is the same.
  const values = new Set(length.split(",").map((v) => v.trim()));
  const [only] = values;
  if (
    values.size !== 1 ||
    only === undefined ||
    !/^\d{1,16}$/.test(only) ||
    !Number.isSafeInteger(Number(only))
  ) {
    throw new HttpProtocolError(`an invalid Content-Length: ${JSON.stringify(length)}`);
  }
  return { kind: "length", length: Number(only) };
}

type ChunkState =
  | "size"
  | "extension"
  | "sizeLf"
  | "data"
  | "dataCr"
  | "dataLf"
  | "trailerStart"
  | "trailer"
  | "endLf"
  | "done";

/** Hex digits of a chunk size: 13 of them reach 2^52, past any object S3 holds. */
const MAX_SIZE_DIGITS = 13;

/** Decodes a chunked body fed in pieces of any size, handing on its payload as views of the pieces. */
export class ChunkedDecoder {
  private state: ChunkState = "size";
  private size = 0;
  private digits = 0;
  private left = 0;

  /** The last chunk and the trailer section have been read. */
  get done(): boolean {
    return this.state === "done";
  }

  /**
   * Decodes `input`; `emit` gets each stretch of payload, a view of `input` valid only during the call.
   * Returns the bytes of `input` used: all of them, unless the body ended inside it.
   */
  feed(input: Uint8Array, emit: (payload: Uint8Array) => void): number {
    let i = 0;
    while (i < input.length && this.state !== "done") {
      if (this.state === "data") {
        const n = Math.min(this.left, input.length - i);
        emit(input.subarray(i, i + n));
        i += n;
        this.left -= n;
        if (this.left === 0) this.state = "dataCr";
      } else {
        this.step(input[i] as number);
        i++;
      }
    }
    return i;
  }

  private step(byte: number): void {
    switch (this.state) {
      case "size":
        this.sizeByte(byte);
        return;
      case "extension":
        // Chunk extensions are ignored, up to the line's end.
        if (byte === CR) this.state = "sizeLf";
        else if (byte === LF) throw new HttpProtocolError("a bare LF in a chunk extension");
        return;
      case "sizeLf":
        this.expect(byte, LF, "after a chunk size");
        this.state = this.size === 0 ? "trailerStart" : "data";
        this.left = this.size;
        return;
      case "dataCr":
        this.expect(byte, CR, "after a chunk's data");
        this.state = "dataLf";
        return;
      case "dataLf":
        this.expect(byte, LF, "after a chunk's data");
        this.state = "size";
        this.size = 0;
        this.digits = 0;
        return;
      case "trailerStart":
        if (byte === LF) throw new HttpProtocolError("a bare LF at the end of a chunked body");
        this.state = byte === CR ? "endLf" : "trailer";
        return;
      case "trailer":
        // A trailer field, skipped to its line's end.
        if (byte === LF) this.state = "trailerStart";
        return;
      case "endLf":
        this.expect(byte, LF, "at the end of a chunked body");
        this.state = "done";
        return;
      default:
        throw new Error(`unreachable: chunk state ${this.state}`);
    }
  }

  private sizeByte(byte: number): void {
    const digit = hexValue(byte);
    if (digit >= 0) {
      if (++this.digits > MAX_SIZE_DIGITS) throw new HttpProtocolError("a chunk size too large");
      this.size = this.size * 16 + digit;
      return;
    }
    if (this.digits === 0) throw new HttpProtocolError("a chunk without a size");
    if (byte === CR) this.state = "sizeLf";
    else if (byte === 0x3b || byte === 0x20 || byte === 0x09) this.state = "extension";
    else throw new HttpProtocolError(`an invalid byte 0x${byte.toString(16)} in a chunk size`);
  }

  private expect(byte: number, wanted: number, where: string): void {
    if (byte !== wanted) throw new HttpProtocolError(`expected ${wanted === CR ? "CR" : "LF"} ${where}`);
  }
}

function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x37;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x57;
  return -1;
}
