import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  bodyFraming,
  ChunkedDecoder,
  findHeadEnd,
  HttpProtocolError,
  parseResponseHead,
} from "../../../functions/adapters/s3/http-response.ts";
import { requestHead } from "../../../functions/adapters/s3/object-reader.ts";

const bytes = (s: string) => Buffer.from(s, "latin1");

const HEAD =
  "HTTP/1.1 200 OK\r\n" +
  "Content-Length: 12\r\n" +
  'ETag:   "abc"  \r\n' +
  "x-amz-meta-Thing: a\r\n" +
  "X-Amz-Meta-Thing: b\r\n" +
  "x-amz-version-id: 3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY\r\n" +
  "\r\n";

/** Feeds `data` to `findHeadEnd` as a reader does, `step` bytes at a time; where the head ends. */
function headEndFedBy(data: Uint8Array, step: number): number {
  let searched = 0;
  for (let end = Math.min(step, data.length); ; end = Math.min(end + step, data.length)) {
    const found = findHeadEnd(data, end, searched);
    if (found >= 0 || end === data.length) return found;
    searched = Math.max(0, end - 3);
  }
}

describe("response heads", () => {
  it("finds the end of a head split anywhere across reads, and not before the blank line", () => {
    const data = bytes(`${HEAD}hello, world`);
    for (const step of [1, 2, 3, 4, 5, 7, 16, 64, data.length]) {
      expect(headEndFedBy(data, step), `${step} bytes a read`).toBe(HEAD.length);
    }
    expect(findHeadEnd(bytes(HEAD), HEAD.length - 1)).toBe(-1);
    expect(findHeadEnd(bytes("HTTP/1.1 200 OK\r\nA: b\r\n\n\r\n"), 26)).toBe(-1);
  });

  it("parses the status, the reason and every field, names in lower case, repeated ones joined", () => {
    expect(parseResponseHead(bytes(HEAD))).toEqual({
      statusCode: 200,
      reason: "OK",
      headers: {
        "content-length": "12",
        etag: '"abc"',
        "x-amz-meta-thing": "a, b",
        "x-amz-version-id": "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
      },
    });
    expect(parseResponseHead(bytes("HTTP/1.0 404\r\n\r\n"))).toEqual({
      statusCode: 404,
      reason: "",
      headers: {},
    });
    expect(parseResponseHead(bytes("HTTP/1.1 412 Precondition Failed\r\nA:\r\n\r\n")).headers).toEqual({
      a: "",
    });
  });

  it("refuses what is not HTTP/1.1: other versions, folded or nameless fields, control characters", () => {
    for (const head of [
      "HTTP/2 200 OK\r\n\r\n",
      "HTTP/1.1 20 OK\r\n\r\n",
      "ICY 200 OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
      "HTTP/1.1 200 OK\r\n: b\r\n\r\n",
      "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
      "HTTP/1.1 200 OK\r\nbad name: b\r\n\r\n",
      "HTTP/1.1 200 OK\r\nA: b\x00c\r\n\r\n",
      "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
      "HTTP/1.1 200 OK\r\nA: b\r\n",
    ]) {
      expect(() => parseResponseHead(bytes(head)), JSON.stringify(head)).toThrow(HttpProtocolError);
    }
  });

  it("frames the body by status, Transfer-Encoding and Content-Length, as RFC 9112 orders them", () => {
    const head = (statusCode: number, headers: Record<string, string>) => ({
      statusCode,
      reason: "",
      headers,
    });
    expect(bodyFraming(head(204, { "content-length": "5" }))).toEqual({ kind: "none" });
    expect(bodyFraming(head(304, {}))).toEqual({ kind: "none" });
    expect(bodyFraming(head(100, {}))).toEqual({ kind: "none" });
    expect(bodyFraming(head(200, { "transfer-encoding": "chunked", "content-length": "5" }))).toEqual({
      kind: "chunked",
    });
    expect(bodyFraming(head(200, { "transfer-encoding": "gzip, Chunked" }))).toEqual({ kind: "chunked" });
    expect(bodyFraming(head(200, { "transfer-encoding": "chunked, gzip" }))).toEqual({ kind: "close" });
    expect(bodyFraming(head(200, { "content-length": "0" }))).toEqual({ kind: "length", length: 0 });
    expect(bodyFraming(head(500, { "content-length": "5, 5" }))).toEqual({ kind: "length", length: 5 });
    expect(bodyFraming(head(200, { "content-length": "5497558138880" }))).toEqual({
      kind: "length",
      length: 5 * 2 ** 40,
    });
    expect(bodyFraming(head(200, {}))).toEqual({ kind: "close" });
    for (const length of ["5, 6", "-1", "1e3", "", "0x10", "99999999999999999"]) {
      expect(() => bodyFraming(head(200, { "content-length": length })), length).toThrow(HttpProtocolError);
    }
  });
});

/** `body` chunked with these chunk sizes, with an extension and a trailer to skip. */
function chunked(body: Uint8Array, sizes: number[]): Buffer {
  const parts: Buffer[] = [];
  for (let off = 0, i = 0; off < body.length; i++) {
    const n = Math.min(body.length - off, sizes[i % sizes.length] as number);
    parts.push(
      bytes(`${n.toString(16)}${i === 1 ? ";name=value" : ""}\r\n`),
      Buffer.from(body.subarray(off, off + n)),
      bytes("\r\n"),
    );
    off += n;
  }
  parts.push(bytes("0\r\nx-trailer: t\r\n\r\n"));
  return Buffer.concat(parts);
}

/** Decodes `wire` fed `step` bytes at a time; the payload and the bytes used. */
function decode(wire: Uint8Array, step: number): { payload: Buffer; used: number; done: boolean } {
  const decoder = new ChunkedDecoder();
  const out: Buffer[] = [];
  let used = 0;
  for (let off = 0; off < wire.length && !decoder.done; off += step) {
    // Each view is copied during the call, as the reader does: the input is reused after it.
    used += decoder.feed(wire.subarray(off, off + step), (p) => out.push(Buffer.from(p)));
  }
  return { payload: Buffer.concat(out), used, done: decoder.done };
}

describe("chunked bodies", () => {
  it("decodes a body however its framing is split across reads", () => {
    const body = randomBytes(70_000);
    const wire = chunked(body, [1, 0x1000, 17, 65_536]);
    for (const step of [1, 2, 3, 5, 8, 1000, 4099, wire.length]) {
      const got = decode(wire, step);
      expect(got.done, `${step} bytes a read`).toBe(true);
      expect(got.used).toBe(wire.length);
      expect(Buffer.compare(got.payload, body), `${step} bytes a read`).toBe(0);
    }
  });

  it("decodes upper-case sizes and an empty body, and stops at the body's end", () => {
    expect(decode(bytes("A\r\n0123456789\r\n0\r\n\r\n"), 4).payload.toString()).toBe("0123456789");
    const empty = decode(bytes("0\r\n\r\nHTTP/1.1 200 OK"), 64);
    expect(empty).toMatchObject({ done: true, used: 5 });
    expect(empty.payload.length).toBe(0);
  });

  it("refuses broken framing", () => {
    for (const wire of [
      "\r\n",
      "g\r\n",
      "3\r\nabcd\r\n",
      "3\r\nabc\n0\r\n\r\n",
      "3\nabc\r\n0\r\n\r\n",
      "3;ext\nabc\r\n",
      "0\r\n\n",
      "0\r\n\rx",
      "10000000000000\r\n",
    ]) {
      expect(() => decode(bytes(wire), 1), JSON.stringify(wire)).toThrow(HttpProtocolError);
    }
  });
});

describe("the request the reader sends", () => {
  const request = {
    method: "GET",
    protocol: "https:",
    hostname: "bucket.s3.eu-west-1.amazonaws.com",
    path: "/staging/abc/upload",
    headers: {
      host: "bucket.s3.eu-west-1.amazonaws.com",
      "x-amz-date": "20261207T000000Z",
      Connection: "keep-alive",
    },
  };

  it("writes the query as the SDK's handler does, and asks to close the connection after the response", () => {
    const head = requestHead({
      ...request,
      query: { versionId: "a+b/c=d!'()*", "x-id": "GetObject", flag: null },
    });
    expect(head).toBe(
      "GET /staging/abc/upload?flag&versionId=a%2Bb%2Fc%3Dd%21%27%28%29%2A&x-id=GetObject HTTP/1.1\r\n" +
        "host: bucket.s3.eu-west-1.amazonaws.com\r\n" +
        "x-amz-date: 20261207T000000Z\r\n" +
        "connection: close\r\n\r\n",
    );
    expect(requestHead({ ...request, port: 9000, headers: {} })).toContain(
      "host: bucket.s3.eu-west-1.amazonaws.com:9000\r\n",
    );
  });

  it("refuses a value or a path that would break its line", () => {
    expect(() => requestHead({ ...request, headers: { a: "b\r\nx-injected: 1" } })).toThrow(TypeError);
    expect(() => requestHead({ ...request, headers: { "a b": "c" } })).toThrow(TypeError);
    expect(() => requestHead({ ...request, path: "/a b" })).toThrow(TypeError);
    expect(() => requestHead({ ...request, path: "/a\r\nb" })).toThrow(TypeError);
    expect(() => requestHead({ ...request, method: "GET /x" })).toThrow(TypeError);
  });
});
