import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { defaultProvider } from "@aws-sdk/credential-provider-node";
import { SigV4Signer } from "./sigv4.ts";

/** A service's public endpoint in a region (AWS's China regions live under their own domain). */
export const serviceEndpoint = (service: string, region: string) =>
  `https://${service}.${region}.amazonaws.com${region.startsWith("cn-") ? ".cn" : ""}`;

/** Attempts and backoff base of a transient failure, as the SDK's standard retry mode (3 attempts). */
const ATTEMPTS = 3;
const RETRY_BASE_MS = 100;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The service refused the request; `status` and `type` are its HTTP status and `x-amzn-ErrorType`. */
export class AwsRequestError extends Error {
  override name = "AwsRequestError";
  constructor(
    message: string,
    readonly status: number,
    readonly type: string | undefined,
    /** The error's body as the service sent it (a JSON-protocol service's fields beside the message). */
    readonly body = "",
  ) {
    super(message);
  }
}

/** Throttling, the service's own faults: worth another attempt. */
export const isTransient = (error: AwsRequestError) => error.status === 429 || error.status >= 500;

/** The role's keys do not change while they are valid: read them again only this long before they expire. */
const REFRESH_BEFORE_MS = 5 * 60_000;
type Credentials = Awaited<ReturnType<ReturnType<typeof defaultProvider>>>;

/**
 * `provider`, asked again only when the keys it gave near their expiration (keys without one are kept):
 * the signer asks for keys at every request, and the chain's first link reads the environment each time.
 */
function keptCredentials(provider: () => Promise<Credentials>): () => Promise<Credentials> {
  let held: { credentials: Credentials; until: number } | undefined;
  return async () => {
    if (held && Date.now() < held.until) return held.credentials;
    const credentials = await provider();
    const expiration = credentials.expiration?.getTime();
    held = { credentials, until: expiration === undefined ? Infinity : expiration - REFRESH_BEFORE_MS };
    return credentials;
  };
}

/** A service's address as node:http's request options name it. */
interface Target {
  protocol: string;
  hostname: string;
  port?: number;
}

export interface SignedResponse {
  status: number;
  text: string;
}

/**
 * SigV4-signed JSON POSTs to one AWS service, with the SDK's signer and default credential chain (on
 * Lambda: the role's keys in the environment). For functions that make one kind of call to a service, a
 * whole SDK client (the Lambda client was 130 KiB of the API bundle) buys nothing but module-init time.
 * `ok` statuses resolve; throttling, 5xx and lost connections are tried again (`retry` says which of the
 * service's refusals are transient), three attempts in all, as the SDK's standard retry mode; anything else
 * is an `AwsRequestError` naming the service's status and error type, with the body it sent.
 */
export class SignedJsonClient {
  private readonly signer: SigV4Signer;
  private readonly credentials: () => Promise<Credentials>;
  /** Where requests go, as node:http takes it: worked out once, not from a URL per request. */
  private readonly target: Target & { host: string; basePath: string };
  readonly url: URL;

  constructor(
    private readonly options: {
      service: string;
      region: string;
      /** The service's address when it is not AWS's (the local stack's stand-in). */
      endpoint?: string;
      timeoutMs: number;
      /** What the caller's error messages call the operation, e.g. "Lambda Invoke (Event) of f". */
      describe: string;
      /** Keys to sign with instead of the default chain's (a caller outside a function, e.g. a test). */
      credentials?: { accessKeyId: string; secretAccessKey: string };
    },
  ) {
    // The chain is resolved on first use and cached.
    const fixed = options.credentials;
    this.credentials = fixed ? async () => fixed : keptCredentials(defaultProvider());
    this.signer = new SigV4Signer(options.service, options.region);
    this.url = new URL(options.endpoint ?? serviceEndpoint(options.service, options.region));
    const { protocol, hostname, port, host, pathname } = this.url;
    this.target = {
      host,
      basePath: pathname.replace(/\/$/, ""),
      protocol,
      // An IPv6 address without its brackets, as node:http wants it.
      hostname: hostname.startsWith("[") ? hostname.slice(1, -1) : hostname,
      ...(port ? { port: Number(port) } : {}),
    };
  }

  async post(
    path: string,
    headers: Record<string, string>,
    body: string,
    ok: readonly number[],
    retry: (error: AwsRequestError) => boolean = isTransient,
  ): Promise<SignedResponse> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.once(path, headers, body, ok);
      } catch (error) {
        const transient = !(error instanceof AwsRequestError) || retry(error);
        if (!transient || attempt >= ATTEMPTS) throw error;
        await sleep(Math.random() * RETRY_BASE_MS * 2 ** attempt);
      }
    }
  }

  private async once(
    relative: string,
    headers: Record<string, string>,
    body: string,
    ok: readonly number[],
  ): Promise<SignedResponse> {
    const path = `${this.target.basePath}${relative}`;
    const signed = this.signer.sign(
      {
        method: "POST",
        path,
        headers: { host: this.target.host, "content-length": String(Buffer.byteLength(body)), ...headers },
        body,
      },
      await this.credentials(),
    );
    const { protocol, hostname, port } = this.target;
    const response = await post(
      { protocol, hostname, ...(port !== undefined ? { port } : {}), path },
      signed,
      body,
      this.options.timeoutMs,
    );
    const { text } = response;
    if (ok.includes(response.status)) return { status: response.status, text };
    const type = response.errorType?.split(":")[0] || errorType(text);
    const message = errorMessage(text);
    throw new AwsRequestError(
      `${this.options.describe} answered ${response.status}${type ? ` ${type}` : ""}` +
        `${message ? `: ${message}` : ""}`,
      response.status,
      type,
      text,
    );
  }
}

/**
 * One POST over node:http(s), on the global agents' kept-alive connections. Not `fetch`: its WHATWG
 * streams and objects were about half of what a create spent on publishing its event (docs/performance.md).
 * Rejects when the connection fails or `timeoutMs` passes before the whole answer is read. The time limit
 * is a plain timer rather than `AbortSignal.timeout`, whose signal, listeners and error object per request
 * were a few percent of the API function's CPU.
 */
function post(
  target: Target & { path: string },
  headers: Record<string, string>,
  body: string,
  timeoutMs: number,
): Promise<SignedResponse & { errorType: string | undefined }> {
  return new Promise((resolve, reject) => {
    const send = target.protocol === "https:" ? httpsRequest : httpRequest;
    const req = send({ ...target, method: "POST", headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", fail);
      res.on("end", () => {
        clearTimeout(timer);
        const type = res.headers["x-amzn-errortype"];
        resolve({
          status: res.statusCode ?? 0,
          text: Buffer.concat(chunks).toString("utf8"),
          errorType: Array.isArray(type) ? type[0] : type,
        });
      });
    });
    const timer = setTimeout(
      () =>
        req.destroy(
          new RequestTimeoutError(
            `no answer from ${target.hostname}${target.port ? `:${target.port}` : ""} within ${timeoutMs} ms`,
          ),
        ),
      timeoutMs,
    );
    function fail(error: Error) {
      clearTimeout(timer);
      reject(error);
    }
    req.on("error", fail);
    req.end(body);
  });
}

/** A request the service did not answer in time (a transient failure: tried again). */
export class RequestTimeoutError extends Error {
  override name = "TimeoutError";
}

function parse(text: string): Record<string, unknown> | undefined {
  try {
    const body = JSON.parse(text) as unknown;
    return body && typeof body === "object" ? (body as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The error type of a JSON-protocol error body (`{"__type": "ns#Type"}`), if it has one. */
function errorType(text: string): string | undefined {
  const type = parse(text)?.__type;
  return typeof type === "string" ? type.split("#").at(-1) : undefined;
}

/** The message of an AWS error body (`{"Type": …, "message": …}`, or `Message`), if it has one. */
function errorMessage(text: string): string | undefined {
  const body = parse(text);
  if (!body) return text.trim().slice(0, 200) || undefined;
  const message = body.message ?? body.Message;
  return typeof message === "string" ? message : undefined;
}
