import http from "node:http";
import https from "node:https";
import type { Readable } from "node:stream";

/** A storage answer other than 2xx to a presigned request. */
export class StorageError extends Error {
  override name = "StorageError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
  /** Worth another try with the same (or a freshly signed) link. */
  get transient(): boolean {
    return this.status === 0 || this.status >= 500 || this.status === 408 || this.status === 429;
  }
  /** The link's signature no longer holds (expired): sign again. */
  get expired(): boolean {
    return this.status === 403 && /expired/i.test(`${this.code} ${this.message}`);
  }
}

export interface Agents {
  http: http.Agent;
  https: https.Agent;
}

/** Keep-alive agents sized for `parallel` transfers, so parts reuse connections. */
export function createAgents(parallel: number): Agents {
  return {
    http: new http.Agent({ keepAlive: true, maxSockets: parallel }),
    https: new https.Agent({ keepAlive: true, maxSockets: parallel }),
  };
}

/**
 * Sends `body` with a presigned request, exactly the headers given (their signature covers Content-Length).
 * node:http rather than fetch: fetch would send a streamed body chunked, without the signed length.
 * `onBytes` is told of every chunk written, for progress.
 */
export function sendPresigned(
  link: { method: string; url: string; headers: Record<string, string> },
  body: Buffer | Readable,
  options: { agents: Agents; signal?: AbortSignal | undefined; onBytes?: ((n: number) => void) | undefined },
): Promise<{ etag: string | undefined }> {
  const url = new URL(link.url);
  const secure = url.protocol === "https:";
  const request = secure ? https.request : http.request;
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(options.signal.reason);
      return;
    }
    const req = request(url, {
      method: link.method,
      headers: link.headers,
      agent: secure ? options.agents.https : options.agents.http,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    req.on("error", (err) => {
      if (options.signal?.aborted) reject(options.signal.reason);
      else reject(new StorageError(0, "NETWORK", `storage request failed: ${err.message}`));
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => {
        // Error bodies are small XML; a success body is empty. Keep at most 64 KiB either way.
        if (chunks.reduce((n, b) => n + b.length, 0) < 65536) chunks.push(c);
      });
      res.on("error", (err) => reject(new StorageError(0, "NETWORK", err.message)));
      res.on("end", () => {
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) {
          const etag = res.headers.etag;
          resolve({ etag: typeof etag === "string" ? etag : undefined });
          return;
        }
        const text = Buffer.concat(chunks).toString("utf8");
        const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? `HTTP_${status}`;
        const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? text.slice(0, 200);
        reject(new StorageError(status, code, `storage refused the upload (${status} ${code}): ${message}`));
      });
    });
    if (Buffer.isBuffer(body)) {
      // Written in slices so progress moves within a part, not only at its end.
      const slice = 1024 * 1024;
      let offset = 0;
      const writeMore = () => {
        while (offset < body.length) {
          const piece = body.subarray(offset, offset + slice);
          offset += piece.length;
          const ok = req.write(piece, () => options.onBytes?.(piece.length));
          if (!ok) {
            req.once("drain", writeMore);
            return;
          }
        }
        req.end();
      };
      writeMore();
    } else {
      body.on("data", (c: Buffer) => options.onBytes?.(c.length));
      body.on("error", (err) => req.destroy(err));
      body.pipe(req);
    }
  });
}
