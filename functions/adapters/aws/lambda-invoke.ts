import { createHash, createHmac, type Hash, type Hmac } from "node:crypto";
import { defaultProvider } from "@aws-sdk/credential-provider-node";
import { SignatureV4 } from "@smithy/signature-v4";

type SourceData = string | ArrayBuffer | ArrayBufferView;
const bytes = (data: SourceData): string | Uint8Array =>
  typeof data === "string"
    ? data
    : ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(data);

/** SHA-256 and HMAC-SHA-256 for the SigV4 signer, from node:crypto. */
class Sha256 {
  private hash: Hash | Hmac;
  constructor(private readonly secret?: SourceData) {
    this.hash = this.fresh();
  }
  private fresh(): Hash | Hmac {
    return this.secret === undefined ? createHash("sha256") : createHmac("sha256", bytes(this.secret));
  }
  update(data: SourceData): void {
    this.hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
  reset(): void {
    this.hash = this.fresh();
  }
}

/** The Lambda API's public endpoint of a region (AWS's China regions live under their own domain). */
const lambdaEndpoint = (region: string) =>
  `https://lambda.${region}.amazonaws.com${region.startsWith("cn-") ? ".cn" : ""}`;

/** Longest wait for the Lambda API to accept a job; an asynchronous invocation is queued, not run. */
const INVOKE_TIMEOUT_MS = 10_000;
/** Attempts and backoff base of a transient failure, as the SDK's standard retry mode (3 attempts). */
const INVOKE_ATTEMPTS = 3;
const RETRY_BASE_MS = 100;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The Lambda API refused the job; `status` and `type` are its HTTP status and `x-amzn-ErrorType`. */
export class LambdaInvokeError extends Error {
  override name = "LambdaInvokeError";
  constructor(
    message: string,
    readonly status: number,
    readonly type: string | undefined,
  ) {
    super(message);
  }
}

/**
 * Invokes one Lambda function asynchronously (InvocationType Event) through the Lambda API (AWS's, or the
 * local stack's): Lambda queues the payload and answers 202; the function then runs with its own timeout,
 * retries and failure destination. One SigV4-signed POST of the Invoke operation with the SDK's signer and default credential chain: the
 * whole `@aws-sdk/client-lambda` (130 KiB of the API bundle) for this one call was most of what kept the
 * API function over its size budget (docs/deploy.md). Anything but Lambda's 202 is an error; throttling,
 * 5xx and lost connections are tried again, three attempts in all, as the SDK client did.
 */
export class LambdaAsyncInvoker {
  private readonly signer: SignatureV4;
  private readonly url: URL;

  constructor(
    private readonly functionName: string,
    region: string,
    /** The Lambda API's address when it is not AWS's (the local stack's stand-in). */
    endpoint?: string,
  ) {
    // The chain is resolved on first use and cached (on Lambda: the function role's keys in the environment).
    this.signer = new SignatureV4({
      service: "lambda",
      region,
      credentials: defaultProvider(),
      sha256: Sha256,
    });
    this.url = new URL(endpoint ?? lambdaEndpoint(region));
  }

  /** Queues `payload` (as JSON) for the function; resolves once Lambda has accepted it. */
  async invoke(payload: unknown): Promise<void> {
    const body = JSON.stringify(payload);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.post(body);
      } catch (error) {
        // As the SDK's standard retry mode: throttling, Lambda's own faults and lost connections.
        const transient =
          !(error instanceof LambdaInvokeError) || error.status === 429 || error.status >= 500;
        if (!transient || attempt >= INVOKE_ATTEMPTS) throw error;
        await sleep(Math.random() * RETRY_BASE_MS * 2 ** attempt);
      }
    }
  }

  private async post(body: string): Promise<void> {
    const path = `${this.url.pathname.replace(/\/$/, "")}/2015-03-31/functions/${encodeURIComponent(this.functionName)}/invocations`;
    const signed = await this.signer.sign({
      method: "POST",
      protocol: this.url.protocol,
      hostname: this.url.hostname,
      ...(this.url.port ? { port: Number(this.url.port) } : {}),
      path,
      query: {},
      headers: {
        host: this.url.host,
        "content-type": "application/json",
        "content-length": String(Buffer.byteLength(body)),
        "x-amz-invocation-type": "Event",
      },
      body,
    });
    const response = await fetch(new URL(path, this.url), {
      method: "POST",
      headers: signed.headers,
      body,
      signal: AbortSignal.timeout(INVOKE_TIMEOUT_MS),
    });
    const text = await response.text();
    if (response.status === 202) return;
    const type = response.headers.get("x-amzn-errortype")?.split(":")[0] || undefined;
    const message = errorMessage(text);
    throw new LambdaInvokeError(
      `Lambda Invoke (Event) of ${this.functionName} answered ${response.status}${type ? ` ${type}` : ""}` +
        `${message ? `: ${message}` : ""}`,
      response.status,
      type,
    );
  }
}

/** The message of a Lambda API error body (`{"Type": …, "message": …}`, or `Message`), if it has one. */
function errorMessage(text: string): string | undefined {
  try {
    const body = JSON.parse(text) as { message?: unknown; Message?: unknown };
    const message = body.message ?? body.Message;
    return typeof message === "string" ? message : undefined;
  } catch {
    return text.trim().slice(0, 200) || undefined;
  }
}
