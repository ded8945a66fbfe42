/**
 * A whole-object GET whose response is read from a socket of its own into large reused buffers.
 *
 * The request is the SDK's own GetObject, built, signed, retried and its errors parsed by the S3 client
 * as any other (endpoint and addressing style, credentials and session tokens, VersionId, If-Match): only
 * the last step, sending the signed request and reading the response, is done here instead of by
 * `node:http`. That path hands on every 16–64 KiB the socket delivers as a new Buffer, through the HTTP
 * parser, a stream and an async iterator, and the importer's read of 1 GiB ran 37–50 full garbage
 * collections; here the socket reads straight into buffers of SLAB_BYTES (`onread`, plain TCP and TLS
 * alike on Node 20 and 22), which are handed on whole and used again once the consumer gives them back.
 *
 * Memory: READ_AHEAD + 1 buffers of SLAB_BYTES, plus those the consumer holds, plus a 64 KiB head buffer.
 */
import { isIP, connect as netConnect, type Socket } from "node:net";
import { Readable } from "node:stream";
import { type ConnectionOptions, connect as tlsConnect } from "node:tls";
import { GetObjectCommand, type GetObjectCommandInput, type S3Client } from "@aws-sdk/client-s3";
import { HttpResponse } from "@smithy/core/protocols";
import { sharedBuffers } from "../../core/buffers.ts";
import type { ObjectRead } from "../../core/ports.ts";
import {
  type BodyFraming,
  bodyFraming,
  ChunkedDecoder,
  findHeadEnd,
  HttpProtocolError,
  parseResponseHead,
  type ResponseHead,
} from "./http-response.ts";

/** Bytes of each buffer the body is read into and handed on in. */
export const SLAB_BYTES = 2 * 1024 * 1024;
/** Full buffers read ahead of the consumer before the socket stops reading. */
const READ_AHEAD = 2;
/** The most a response head may take (S3's are a few KiB: user metadata is limited to 2 KiB). */
const HEAD_LIMIT = 64 * 1024;

/** The signed request as the SDK hands it to its HTTP handler (`@smithy/protocol-http`'s HttpRequest). */
export interface SignedRequest {
  method: string;
  protocol: string;
  hostname: string;
  port?: number | undefined;
  path: string;
  query?: Record<string, string | string[] | null> | undefined;
  headers: Record<string, string>;
  body?: unknown;
  username?: string | undefined;
  password?: string | undefined;
  fragment?: string | undefined;
}

/**
 * The buffers of one read, taken from the process's pool (`sharedBuffers`). A buffer goes back to it
 * only when the consumer gives back the chunk it was lent as; one never given back is never written
 * again.
 */
export class SlabPool {
  private readonly lent = new Set<ArrayBufferLike>();

  take(): Uint8Array {
    return new Uint8Array(sharedBuffers.take(SLAB_BYTES));
  }

  lend(chunk: Uint8Array): Uint8Array {
    this.lent.add(chunk.buffer);
    return chunk;
  }

  /** Gives back a chunk lent by this pool (any view of it); anything else, or twice, is ignored. */
  release(chunk: Uint8Array): void {
    const buffer = chunk.buffer;
    if (this.lent.delete(buffer)) sharedBuffers.give(buffer as SharedArrayBuffer);
  }
}

/** Full buffers waiting for the consumer, the end of the body, or its failure. */
class BodyQueue {
  private readonly ready: Uint8Array[] = [];
  private ended = false;
  private failure: { error: unknown } | undefined;
  private waiter: { resolve: (c: Uint8Array | undefined) => void; reject: (e: unknown) => void } | undefined;

  constructor(private readonly onRoom: () => void) {}

  /** More full buffers than the consumer should be ahead of. */
  get full(): boolean {
    return this.ready.length >= READ_AHEAD;
  }

  get settled(): boolean {
    return this.ended || this.failure !== undefined;
  }

  push(chunk: Uint8Array): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    if (waiter) waiter.resolve(chunk);
    else this.ready.push(chunk);
  }

  end(): void {
    this.ended = true;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.resolve(this.ready.shift());
  }

  fail(error: unknown): void {
    if (this.failure) return;
    this.failure = { error };
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(error);
  }

  /** The next chunk, or undefined after the last; a failure is reported before any chunk still waiting. */
  take(): Promise<Uint8Array | undefined> {
    if (this.failure) return Promise.reject(this.failure.error);
    const wasFull = this.full;
    const chunk = this.ready.shift();
    if (chunk) {
      if (wasFull && !this.full) this.onRoom();
      return Promise.resolve(chunk);
    }
    if (this.ended) return Promise.resolve(undefined);
    if (this.waiter) return Promise.reject(new Error("the body is read by one consumer at a time"));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }
}

/** The error NodeHttpHandler gives for an aborted request. */
function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  const error = new Error(reason && !(reason instanceof Error) ? String(reason) : "Request aborted", {
    ...(reason instanceof Error ? { cause: reason } : {}),
  });
  error.name = "AbortError";
  return error;
}

/** Network errors NodeHttpHandler names `TimeoutError` (the SDK retries those). */
const TIMEOUT_CODES = new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT"]);

function connectionError(message: string): Error {
  return Object.assign(new Error(message), { code: "ECONNRESET" });
}

type Mode = "head" | "length" | "close" | "chunked" | "done";

/** One request on one connection, and its response read as it arrives. */
export class Exchange {
  readonly head: Promise<ResponseHead>;
  readonly queue: BodyQueue;
  private mode: Mode = "head";
  private readonly scratch = Buffer.allocUnsafe(HEAD_LIMIT);
  private scratchFill = 0;
  private searched = 0;
  private slab: Uint8Array | undefined;
  private fill = 0;
  /** Body bytes still to come when the length is known. */
  private left = Number.POSITIVE_INFINITY;
  private decoder: ChunkedDecoder | undefined;
  private headSettled = false;
  private settleHead!: { resolve: (h: ResponseHead) => void; reject: (e: unknown) => void };
  private readonly socket: Socket;
  private readonly onAbort: () => void;

  constructor(
    request: SignedRequest,
    private readonly pool: SlabPool,
    private readonly signal?: AbortSignal,
  ) {
    this.head = new Promise((resolve, reject) => {
      this.settleHead = { resolve, reject };
    });
    this.head.catch(() => undefined);
    this.queue = new BodyQueue(() => this.socket.resume());
    const onread = { buffer: () => this.nextBuffer(), callback: (n: number) => this.onRead(n) };
    const tls = request.protocol === "https:";
    const host = request.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = request.port ?? (tls ? 443 : 80);
    // `onread` works for TLS sockets too (Node 20 and 22; tested), though Node's types leave it out there.
    const options = { host, port, onread, ...(tls && !isIP(host) ? { servername: host } : {}) };
    this.socket = tls ? tlsConnect(options as ConnectionOptions) : netConnect(options);
    this.socket.setNoDelay(true);
    this.socket.on("error", (err: NodeJS.ErrnoException) => {
      const timeout = !this.headSettled && err.code !== undefined && TIMEOUT_CODES.has(err.code);
      this.fail(timeout ? Object.assign(err, { name: "TimeoutError" }) : err);
    });
    this.socket.on("end", () => this.onEnd());
    this.socket.on("close", () =>
      this.fail(connectionError("the connection closed before the response ended")),
    );
    this.onAbort = () => this.fail(abortError(signal as AbortSignal));
    signal?.addEventListener("abort", this.onAbort, { once: true });
    if (signal?.aborted) {
      this.onAbort();
      return;
    }
    try {
      this.socket.write(requestHead(request), "latin1");
    } catch (err) {
      this.fail(err);
    }
  }

  /** Stops reading, closing the connection (a no-op once the response has ended). */
  close(): void {
    this.fail(new Error("the response body was closed before its end"));
  }

  /** Where the socket reads next: called by Node after every read (and once before the first). */
  private nextBuffer(): Uint8Array {
    switch (this.mode) {
      case "head":
        return this.scratch.subarray(this.scratchFill);
      case "length":
      case "close": {
        const slab = this.slab as Uint8Array;
        return slab.subarray(this.fill, this.fill + Math.min(slab.length - this.fill, this.left));
      }
      default:
        // Chunked framing is decoded from here into the buffers; after the end nothing more is expected.
        return this.scratch;
    }
  }

  /** `n` bytes arrived where `nextBuffer` said; returns false to stop reading until the consumer catches up. */
  private onRead(n: number): boolean {
    try {
      switch (this.mode) {
        case "head":
          this.scratchFill += n;
          this.parseHead();
          break;
        case "length":
        case "close":
          this.fill += n;
          this.left -= n;
          this.filled();
          break;
        case "chunked":
          this.feedChunked(this.scratch.subarray(0, n));
          break;
        default:
          this.fail(new HttpProtocolError("bytes after the end of the response"));
      }
    } catch (err) {
      this.fail(err);
    }
    return !this.queue.full;
  }

  private parseHead(): void {
    for (;;) {
      const end = findHeadEnd(this.scratch, this.scratchFill, this.searched);
      if (end < 0) {
        this.searched = Math.max(0, this.scratchFill - 3);
        if (this.scratchFill === HEAD_LIMIT) {
          throw new HttpProtocolError(`a response head larger than ${HEAD_LIMIT} bytes`);
        }
        return;
      }
      const head = parseResponseHead(this.scratch.subarray(0, end));
      const rest = this.scratch.subarray(end, this.scratchFill);
      // An interim response (100 Continue and the like) is followed by the real one.
      if (head.statusCode < 200) {
        this.scratch.copyWithin(0, end, this.scratchFill);
        this.scratchFill = rest.length;
        this.searched = 0;
        continue;
      }
      this.startBody(bodyFraming(head), Buffer.from(rest));
      this.headSettled = true;
      this.settleHead.resolve(head);
      return;
    }
  }

  private startBody(framing: BodyFraming, early: Uint8Array): void {
    if (framing.kind === "none") {
      this.finish();
      return;
    }
    this.slab = this.pool.take();
    if (framing.kind === "chunked") {
      this.mode = "chunked";
      this.decoder = new ChunkedDecoder();
      this.feedChunked(early);
      return;
    }
    this.mode = framing.kind;
    if (framing.kind === "length") this.left = framing.length;
    this.copyIn(early);
    if (this.left === 0) this.finish();
  }

  private feedChunked(bytes: Uint8Array): void {
    const decoder = this.decoder as ChunkedDecoder;
    decoder.feed(bytes, (payload) => this.copyIn(payload));
    if (decoder.done) this.finish();
  }

  /** Body bytes that arrived elsewhere (with the head, or inside chunked framing), copied into the buffers. */
  private copyIn(bytes: Uint8Array): void {
    if (bytes.length > this.left) throw new HttpProtocolError("more body bytes than the Content-Length");
    for (let off = 0; off < bytes.length; ) {
      const slab = this.slab as Uint8Array;
      const n = Math.min(bytes.length - off, slab.length - this.fill);
      slab.set(bytes.subarray(off, off + n), this.fill);
      this.fill += n;
      this.left -= n;
      off += n;
      if (this.fill === slab.length) this.handOn();
    }
  }

  /** After bytes were read into the current buffer: hands it on when full, ends the body after its last byte. */
  private filled(): void {
    if (this.fill === (this.slab as Uint8Array).length) this.handOn();
    if (this.left === 0) this.finish();
  }

  private handOn(): void {
    this.queue.push(this.pool.lend((this.slab as Uint8Array).subarray(0, this.fill)));
    // No new buffer when the length is known and reached (an object of a whole number of buffers).
    this.slab = this.left > 0 ? this.pool.take() : undefined;
    this.fill = 0;
  }

  private finish(): void {
    if (this.mode === "done") return;
    this.mode = "done";
    if (this.slab && this.fill > 0) this.queue.push(this.pool.lend(this.slab.subarray(0, this.fill)));
    this.slab = undefined;
    this.queue.end();
    this.cleanUp();
  }

  private onEnd(): void {
    if (this.mode === "close") this.finish();
    else if (this.mode === "head") this.fail(connectionError("socket hang up"));
    else this.fail(connectionError("the connection closed before the response ended"));
  }

  private fail(error: unknown): void {
    if (!this.headSettled) {
      this.headSettled = true;
      this.settleHead.reject(error);
    }
    if (this.mode === "done") return;
    this.mode = "done";
    this.slab = undefined;
    this.queue.fail(error);
    this.cleanUp();
  }

  private cleanUp(): void {
    this.signal?.removeEventListener("abort", this.onAbort);
    // Not from inside Node's read callback, which may be running this.
    queueMicrotask(() => this.socket.destroy());
  }
}

/**
 * The body of a response read by an `Exchange`. `chunks` lends the buffers themselves (see `ObjectRead`);
 * read as a stream (the SDK does, to parse an error response), every chunk is a copy.
 */
export class SocketBody extends Readable {
  private use: "chunks" | "stream" | undefined;

  constructor(
    private readonly exchange: Exchange,
    private readonly pool: SlabPool,
  ) {
    super();
  }

  /** The body's bytes in order, each chunk lent until it is given back with `release`. */
  async *chunks(): AsyncGenerator<Uint8Array> {
    this.claim("chunks");
    try {
      for (let c = await this.exchange.queue.take(); c; c = await this.exchange.queue.take()) yield c;
    } finally {
      this.exchange.close();
    }
  }

  release(chunk: Uint8Array): void {
    this.pool.release(chunk);
  }

  override _read(): void {
    this.claim("stream");
    this.exchange.queue.take().then(
      (chunk) => {
        if (!chunk) return void this.push(null);
        const copy = Buffer.from(chunk);
        this.pool.release(chunk);
        this.push(copy);
      },
      (err: unknown) => this.destroy(err instanceof Error ? err : new Error(String(err))),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.exchange.close();
    callback(error);
  }

  private claim(use: "chunks" | "stream"): void {
    if (this.use !== undefined && this.use !== use) throw new Error("the body is read one way only");
    this.use = use;
  }
}

/** Characters that would let a value end its line of the request head. */
const LINE_BREAK = /[\r\n\0]/;

/** The request line and header fields of `request`, sent with `Connection: close`. */
export function requestHead(request: SignedRequest): string {
  const query = buildQueryString(request.query ?? {});
  const target = query ? `${request.path}?${query}` : request.path;
  if (!/^[A-Z]+$/.test(request.method) || !target.startsWith("/") || /[\s\0]/.test(target)) {
    throw new TypeError(`not a request this reader sends: ${request.method} ${target}`);
  }
  const lines = [`${request.method} ${target} HTTP/1.1`];
  let host = false;
  for (const [name, value] of Object.entries(request.headers)) {
    const lower = name.toLowerCase();
    if (lower === "connection") continue;
    if (LINE_BREAK.test(name) || LINE_BREAK.test(value) || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
      throw new TypeError(`a header this reader cannot send: ${JSON.stringify(name)}`);
    }
    host ||= lower === "host";
    lines.push(`${name}: ${value}`);
  }
  if (!host) lines.push(`host: ${request.hostname}${request.port ? `:${request.port}` : ""}`);
  lines.push("connection: close", "", "");
  return lines.join("\r\n");
}

/** The query string as the SDK's Node handler writes it (`@smithy/querystring-builder`): the signature covers it. */
function buildQueryString(query: Record<string, string | string[] | null>): string {
  const parts: string[] = [];
  for (const name of Object.keys(query).sort()) {
    const value = query[name];
    const key = escapeUri(name);
    if (Array.isArray(value)) {
      for (const v of value) parts.push(`${key}=${escapeUri(v)}`);
    } else {
      parts.push(value || typeof value === "string" ? `${key}=${escapeUri(value)}` : key);
    }
  }
  return parts.join("&");
}

const escapeUri = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/** Requests this reader sends itself; anything else goes on to the SDK's handler. */
function isPlainGet(request: SignedRequest): boolean {
  return (
    request.method === "GET" &&
    (request.protocol === "http:" || request.protocol === "https:") &&
    request.body === undefined &&
    !request.username &&
    !request.password &&
    !request.fragment
  );
}

/**
 * Reads the whole object `input` names through `client`, the response over a socket of its own (see the
 * top of this file). Errors are the SDK's, as `client.send` gives them; `onError` may map them.
 */
export function readObject(
  client: S3Client,
  input: GetObjectCommandInput,
  signal?: AbortSignal,
  onError: (err: unknown) => unknown = (err) => err,
): ObjectRead & { readonly pool: SlabPool; release(chunk: Uint8Array): void } {
  const pool = new SlabPool();
  async function* chunks(): AsyncGenerator<Uint8Array> {
    const command = new GetObjectCommand(input);
    // Innermost, after signing and retries: it stands in for the HTTP handler, so the SDK's
    // deserializer reads what it returns as it would a response from `node:http`.
    command.middlewareStack.add(
      (next) => async (args) => {
        const request = args.request as SignedRequest;
        if (!isPlainGet(request)) return next(args);
        const exchange = new Exchange(request, pool, signal);
        const head = await exchange.head;
        const body = new SocketBody(exchange, pool);
        return {
          response: new HttpResponse({
            statusCode: head.statusCode,
            reason: head.reason,
            headers: head.headers,
            body,
          }),
        };
      },
      { step: "deserialize", priority: "low", name: "hangarSocketRead" },
    );
    const out = await client.send(command, { abortSignal: signal }).catch((err: unknown) => {
      throw onError(err);
    });
    if (!out.Body) return;
    if (out.Body instanceof SocketBody) yield* out.Body.chunks();
    else yield* out.Body as Readable;
  }
  return {
    pool,
    [Symbol.asyncIterator]: () => chunks(),
    release: (chunk: Uint8Array) => pool.release(chunk),
  };
}
