import { createHash, createHmac } from "node:crypto";

/** The keys a request is signed with (in Lambda, the role's, from the environment). */
export interface SigningCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string | undefined;
}

/** Headers SigV4 never signs (the SDK signer's list): proxies and clients may change them. */
const UNSIGNABLE = new Set([
  "authorization",
  "cache-control",
  "connection",
  "expect",
  "from",
  "keep-alive",
  "max-forwards",
  "pragma",
  "referer",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "user-agent",
  "x-amzn-trace-id",
]);

const sha256Hex = (data: string) => createHash("sha256").update(data).digest("hex");
const hmac = (key: string | Buffer, data: string) => createHmac("sha256", key).update(data).digest();

/** RFC 3986 escaping as SigV4 wants it: `encodeURIComponent` and also `!'()*`. */
export const escapeUri = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/** `20261207T190235Z` and `20261207`. */
function amzDates(date: Date): { long: string; short: string } {
  const long = `${date.toISOString().slice(0, 19).replace(/[-:]/g, "")}Z`;
  return { long, short: long.slice(0, 8) };
}

/**
 * A path as SigV4 canonicalises it for every service but S3: empty and `.` segments dropped, `..`
 * resolved, then each character escaped twice over (the signer's `uriEscapePath`), slashes kept.
 */
function canonicalPath(path: string): string {
  const segments: string[] = [];
  for (const segment of path.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") segments.pop();
    else segments.push(segment);
  }
  const normalized = `${path.startsWith("/") ? "/" : ""}${segments.join("/")}${segments.length > 0 && path.endsWith("/") ? "/" : ""}`;
  return escapeUri(normalized).replace(/%2F/g, "/");
}

/**
 * AWS Signature Version 4 for one service in one region: the same headers and signature as the SDK's
 * `SignatureV4` (`@smithy/signature-v4`, with its default `applyChecksum`, and `uriEscapePath` but for S3
 * as the S3 client sets it), and the same presigned query for S3 links. The SDK's signer derives a
 * cache key from the credentials with an HMAC on every request and builds its canonical request through
 * several generic layers (about a fifth of a DynamoDB call's CPU in the API function); this one keeps the
 * day's signing key for the keys it was derived from and writes the canonical request directly.
 */
export class SigV4Signer {
  private key: { secretAccessKey: string; day: string; bytes: Buffer } | undefined;

  constructor(
    private readonly service: string,
    private readonly region: string,
  ) {}

  /** The credential scope of a day: `20261207/us-east-1/dynamodb/aws4_request`. */
  private scope(day: string): string {
    return `${day}/${this.region}/${this.service}/aws4_request`;
  }

  /** The signing key of `day` for `secretAccessKey`, derived once (four HMACs) and kept while both last. */
  private signingKey(secretAccessKey: string, day: string): Buffer {
    const kept = this.key;
    if (kept && kept.day === day && kept.secretAccessKey === secretAccessKey) return kept.bytes;
    let bytes = hmac(`AWS4${secretAccessKey}`, day);
    for (const part of [this.region, this.service, "aws4_request"]) bytes = hmac(bytes, part);
    this.key = { secretAccessKey, day, bytes };
    return bytes;
  }

  private signature(
    credentials: SigningCredentials,
    dates: { long: string; short: string },
    canonical: string,
  ) {
    const toSign = `AWS4-HMAC-SHA256\n${dates.long}\n${this.scope(dates.short)}\n${sha256Hex(canonical)}`;
    return createHmac("sha256", this.signingKey(credentials.secretAccessKey, dates.short))
      .update(toSign)
      .digest("hex");
  }

  /**
   * The query of a presigned S3 request, as the SDK's `S3RequestPresigner` gives it (`X-Amz-*` parameters
   * with `X-Amz-Signature`, `X-Amz-Content-Sha256=UNSIGNED-PAYLOAD`, and `query`): `path` is signed as it
   * is (S3 does not escape it again), and so is each of `headers` (names in lower case, `host` among them).
   */
  presign(
    request: { method: string; path: string; headers: Record<string, string>; query: Record<string, string> },
    credentials: SigningCredentials,
    options: { expiresInSeconds: number; date?: Date | undefined },
  ): Record<string, string> {
    if (options.expiresInSeconds > MAX_PRESIGNED_SECONDS)
      throw new RangeError("SigV4 presigned URLs must expire within a week");
    const dates = amzDates(options.date ?? new Date());
    const query: Record<string, string> = { ...request.query, "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD" };
    if (credentials.sessionToken) query["X-Amz-Security-Token"] = credentials.sessionToken;
    query["X-Amz-Algorithm"] = "AWS4-HMAC-SHA256";
    query["X-Amz-Credential"] = `${credentials.accessKeyId}/${this.scope(dates.short)}`;
    query["X-Amz-Date"] = dates.long;
    query["X-Amz-Expires"] = String(options.expiresInSeconds);
    const names = Object.keys(request.headers).sort();
    query["X-Amz-SignedHeaders"] = names.join(";");
    let canonicalHeaders = "";
    for (const name of names) canonicalHeaders += `${name}:${canonicalValue(request.headers[name] ?? "")}\n`;
    const canonical = `${request.method}\n${request.path}\n${queryString(query)}\n${canonicalHeaders}\n${query["X-Amz-SignedHeaders"]}\nUNSIGNED-PAYLOAD`;
    query["X-Amz-Signature"] = this.signature(credentials, dates, canonical);
    return query;
  }

  /**
   * `headers` (names in lower case, `host` among them) with `x-amz-date`, `x-amz-security-token` (with a
   * session token), `x-amz-content-sha256` and `authorization` added, for a request of `method` to `path`
   * with `query` (sent as `queryString` writes it) and `body`. For S3 the path is signed as it is sent
   * (the SDK's S3 signer does not escape it again); for other services it is canonicalised.
   */
  sign(
    request: {
      method: string;
      path: string;
      query?: Record<string, string>;
      headers: Record<string, string>;
      body: string;
    },
    credentials: SigningCredentials,
    date = new Date(),
  ): Record<string, string> {
    const dates = amzDates(date);
    const headers: Record<string, string> = { ...request.headers, "x-amz-date": dates.long };
    // What the signer generates is never taken from the caller.
    delete headers.authorization;
    delete headers.date;
    if (credentials.sessionToken) headers["x-amz-security-token"] = credentials.sessionToken;
    const payloadHash = headers["x-amz-content-sha256"] ?? sha256Hex(request.body);
    headers["x-amz-content-sha256"] = payloadHash;
    const names = Object.keys(headers)
      .filter((name) => !UNSIGNABLE.has(name) && !name.startsWith("proxy-") && !name.startsWith("sec-"))
      .sort();
    let canonicalHeaders = "";
    for (const name of names) canonicalHeaders += `${name}:${canonicalValue(headers[name] ?? "")}\n`;
    const signedHeaders = names.join(";");
    const path = this.service === "s3" ? request.path : canonicalPath(request.path);
    const query = request.query ? queryString(request.query) : "";
    const canonical = `${request.method}\n${path}\n${query}\n${canonicalHeaders}\n${signedHeaders}\n${payloadHash}`;
    headers.authorization =
      `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${this.scope(dates.short)}, ` +
      `SignedHeaders=${signedHeaders}, Signature=${this.signature(credentials, dates, canonical)}`;
    return headers;
  }
}

/** The longest a presigned link may live: SigV4 refuses more than a week. */
export const MAX_PRESIGNED_SECONDS = 7 * 24 * 3600;

/** A query string as the SDK writes it (`buildQueryString`): keys in order, keys and values escaped. */
export function queryString(query: Record<string, string>): string {
  return Object.keys(query)
    .sort()
    .map((key) => `${escapeUri(key)}=${escapeUri(query[key] ?? "")}`)
    .join("&");
}

/** A header value as SigV4 signs it: line breaks as spaces, runs of blanks as one, trimmed of one blank. */
function canonicalValue(value: string): string {
  return value
    .replace(/[\r\n]/g, " ")
    .replace(/[ \t]+/g, " ")
    .replace(/^ | $/g, "");
}
