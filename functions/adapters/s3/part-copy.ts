import { channel } from "node:diagnostics_channel";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { type S3Client, S3ServiceException, UploadPartCopyCommand } from "@aws-sdk/client-s3";
import { queryString, type SigningCredentials, SigV4Signer } from "../aws/sigv4.ts";
import { type BucketTarget, BucketTargets, escapeKey } from "./bucket-target.ts";
import { copySource } from "./copy.ts";
import { type ZeroSource, zeroEtag } from "./zero-object.ts";

/** One part of a multipart upload, copied inside storage from a range of another object. */
export interface PartCopy {
  bucket: string;
  key: string;
  /** Always set: undefined only as the writer holds it before its upload starts. */
  uploadId: string | undefined;
  partNumber: number;
  /** `x-amz-copy-source`: `bucket/key`, the key URL-encoded, with `?versionId=` when it names one. */
  source: string;
  /** The first and the last byte of the range copied. */
  first: number;
  last: number;
  /** The ETag the source must still have. */
  ifMatch?: string | undefined;
}

/**
 * Published before each copy request Hangar sends itself (each attempt) (`{ client, part }`): what the SDK's middleware
 * would have seen of an `UploadPartCopyCommand`, for whoever counts a client's requests.
 */
export const partCopyChannel = channel("hangar:s3.part-copy");

/** Attempts and backoff base of a transient failure, as the SDK's standard retry mode (3 attempts). */
const ATTEMPTS = 3;
const RETRY_BASE_MS = 100;
/** Error codes storage answers that are worth another attempt, whatever their status. */
const TRANSIENT_CODES = new Set(["InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"]);

/** The text of an XML element in an S3 answer (`<Code>`, `<ETag>`…), its entities decoded. */
function element(xml: string, name: string): string | undefined {
  const open = xml.indexOf(`<${name}>`);
  if (open < 0) return undefined;
  const close = xml.indexOf(`</${name}>`, open);
  if (close < 0) return undefined;
  return xml
    .slice(open + name.length + 2, close)
    .replace(/&(quot|amp|lt|gt|apos|#34|#39);/g, (_, e: string) => ENTITIES[e] ?? "");
}
const ENTITIES: Record<string, string> = {
  quot: '"',
  amp: "&",
  lt: "<",
  gt: ">",
  apos: "'",
  "#34": '"',
  "#39": "'",
};

/**
 * What an UploadPartCopy answer means: the part's ETag, or the error storage reported, as the SDK would
 * raise it (an `S3ServiceException` named by storage's error code). A 200 whose body is an `<Error>` is an
 * error: S3 may fail a copy after it has sent its status line.
 */
function copyAnswer(status: number, body: string, requestId?: string): string | S3ServiceException {
  const errorXml = body.includes("<Error>");
  if (status === 200 && !errorXml) {
    const etag = element(body, "ETag");
    if (etag) return etag;
  }
  const code = errorXml ? element(body, "Code") : undefined;
  // As the SDK: an error inside a 200 is a server fault, tried again as one.
  const httpStatusCode = status === 200 ? 500 : status;
  return new S3ServiceException({
    name: code ?? (status === 200 ? "InternalError" : status === 404 ? "NotFound" : `Http${status}`),
    $fault: httpStatusCode >= 500 ? "server" : "client",
    $metadata: { httpStatusCode, ...(requestId ? { requestId } : {}) },
    message:
      (errorXml ? element(body, "Message") : undefined) ??
      (status === 200 ? "storage answered the copy without its result" : `storage answered ${status}`),
  });
}

/** Worth another attempt: a lost connection, throttling, or a fault of storage's own. */
function transient(error: unknown): boolean {
  if (!(error instanceof S3ServiceException)) return !(error instanceof Error && error.name === "AbortError");
  const status = error.$metadata.httpStatusCode ?? 0;
  return status === 429 || status >= 500 || TRANSIENT_CODES.has(error.name);
}

/**
 * UploadPartCopy requests signed by Hangar's SigV4 signer and sent over `node:http(s)`'s kept-alive
 * connections, without the SDK's middleware stack: a converted image is mostly parts copied inside
 * storage (runs of the upload, parts of zeros), a request every 8 MiB, and the SDK's serialising,
 * endpoint resolution, signing and XML parsing were about a fifth of the importer's main thread
 * (docs/performance.md). The bucket's endpoint, addressing and region are the client's, resolved once by
 * the SDK's rules; errors are `S3ServiceException`s named by storage's code, as the SDK raises them; a
 * transient failure is tried again, three attempts in all, as the SDK's standard retry mode. Where the
 * bucket signs with SigV4a (multi-region access points) the copy is the SDK's command.
 */
export class PartCopier {
  private readonly targets: BucketTargets;

  constructor(private readonly client: S3Client) {
    this.targets = new BucketTargets(client);
  }

  /** Copies the part; the ETag storage gave it. */
  async copy(part: PartCopy, signal?: AbortSignal): Promise<string> {
    const target = await this.targets.get(part.bucket);
    if (!(target.signer instanceof SigV4Signer)) return this.sdkCopy(part, signal);
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      try {
        return await this.once(part, target.signer, target, signal);
      } catch (error) {
        if (signal?.aborted || !transient(error) || attempt >= ATTEMPTS) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * RETRY_BASE_MS * 2 ** attempt));
      }
    }
  }

  private async once(
    part: PartCopy,
    signer: SigV4Signer,
    target: BucketTarget,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    const path = `${target.prefix}/${escapeKey(part.key)}`;
    const query = { partNumber: String(part.partNumber), uploadId: part.uploadId ?? "" };
    const headers: Record<string, string> = {
      host: target.host,
      "content-length": "0",
      "x-amz-copy-source": part.source,
      "x-amz-copy-source-range": `bytes=${part.first}-${part.last}`,
    };
    if (part.ifMatch) headers["x-amz-copy-source-if-match"] = part.ifMatch;
    if (partCopyChannel.hasSubscribers) partCopyChannel.publish({ client: this.client, part });
    const credentials: SigningCredentials = await this.client.config.credentials();
    const signed = signer.sign({ method: "PUT", path, query, headers, body: "" }, credentials);
    const response = await send(
      {
        protocol: target.protocol,
        hostname: target.hostname.startsWith("[") ? target.hostname.slice(1, -1) : target.hostname,
        ...(target.port !== undefined ? { port: target.port } : {}),
        path: `${path}?${queryString(query)}`,
      },
      signed,
      signal,
    );
    const answer = copyAnswer(response.status, response.body, response.requestId);
    if (typeof answer === "string") return answer;
    throw answer;
  }

  private async sdkCopy(part: PartCopy, signal: AbortSignal | undefined): Promise<string> {
    const out = await this.client.send(
      new UploadPartCopyCommand({
        Bucket: part.bucket,
        Key: part.key,
        UploadId: part.uploadId,
        PartNumber: part.partNumber,
        CopySource: part.source,
        CopySourceRange: `bytes=${part.first}-${part.last}`,
        ...(part.ifMatch ? { CopySourceIfMatch: part.ifMatch } : {}),
      }),
      { abortSignal: signal },
    );
    const etag = out.CopyPartResult?.ETag;
    if (!etag) throw new Error("UploadPartCopy answered without an ETag");
    return etag;
  }
}

/** The copier of each client, made on first use. */
const copiers = new WeakMap<S3Client, PartCopier>();
export function partCopier(client: S3Client): PartCopier {
  let copier = copiers.get(client);
  if (!copier) {
    copier = new PartCopier(client);
    copiers.set(client, copier);
  }
  return copier;
}

/**
 * Part `partNumber` of upload `uploadId` at `key`, `length` bytes copied from an object of zeros; its ETag,
 * or undefined when that ETag is not the md5 of zeros (the object of zeros holds something else, written
 * by someone who could, or storage's ETags are not md5s, as with SSE-KMS): the caller then sends the
 * zeros, replacing the part. An object of zeros deleted since it was made is made again, once.
 */
export async function copyZeros(
  copier: PartCopier,
  zeros: ZeroSource,
  part: { bucket: string; key: string; uploadId: string | undefined; partNumber: number },
  length: number,
  signal?: AbortSignal,
): Promise<string | undefined> {
  for (let attempt = 1; ; attempt++) {
    const made = zeros.objectFor(length);
    const from = await made;
    signal?.throwIfAborted();
    try {
      const etag = await copier.copy(
        { ...part, source: copySource(part.bucket, from), first: 0, last: length - 1 },
        signal,
      );
      return etag.replaceAll('"', "") === zeroEtag(length) ? etag : undefined;
    } catch (err) {
      if (attempt > 1 || !(err instanceof Error && err.name === "NoSuchKey")) throw err;
      zeros.forget(length, made);
    }
  }
}

/** One PUT without a body; its status, body and request id. */
function send(
  target: { protocol: string; hostname: string; port?: number; path: string },
  headers: Record<string, string>,
  signal: AbortSignal | undefined,
): Promise<{ status: number; body: string; requestId: string | undefined }> {
  return new Promise((resolve, reject) => {
    const request = target.protocol === "https:" ? httpsRequest : httpRequest;
    const req = request(
      { ...target, method: "PUT", headers, ...(signal ? { signal } : {}) },
      (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", reject);
        res.on("end", () => {
          const id = res.headers["x-amz-request-id"];
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString("utf8"),
            requestId: Array.isArray(id) ? id[0] : id,
          });
        });
      },
    );
    req.on("error", reject);
    req.end();
  });
}
