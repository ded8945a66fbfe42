import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { formatUrl } from "@aws-sdk/core/util";
import { S3RequestPresigner } from "@aws-sdk/s3-request-presigner";
import { getEndpointFromInstructions } from "@smithy/core/endpoints";
import { HttpRequest } from "@smithy/core/protocols";
import { queryString, type SigningCredentials, SigV4Signer } from "../aws/sigv4.ts";

/** Where a bucket's objects are addressed and how requests to them are signed, as the SDK resolves it. */
interface BucketTarget {
  protocol: string;
  hostname: string;
  port: number | undefined;
  /** The path before the key: `/<bucket>` with path-style addressing, empty with virtual hosts. */
  prefix: string;
  /** Hangar's SigV4 signer for the bucket's region; the SDK's presigner where it signs with SigV4a. */
  signer: SigV4Signer | S3RequestPresigner;
}

/** A key as the SDK writes it into a path: each segment URI-escaped (also `!'()*`), slashes kept. */
const escapeKey = (key: string) =>
  key
    .split("/")
    .map((s) =>
      encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`),
    )
    .join("/");

/**
 * Presigned `PutObject` links, the URL the SDK's `getSignedUrl` gives for a `PutObjectCommand`, without
 * running the command's middleware stack and building a signer for every link: the bucket's endpoint is
 * resolved once, and the link is signed by Hangar's SigV4 signer (`aws/sigv4.ts`), which keeps the day's
 * signing key and writes the canonical request directly. On a show of a queued image the SDK's presigner
 * was still about a tenth of the API function's CPU.
 */
export class PutLinkSigner {
  private readonly targets = new Map<string, Promise<BucketTarget>>();

  constructor(private readonly client: S3Client) {}

  /** The client's keys (its provider keeps them until they near their expiry). */
  private credentials(): Promise<SigningCredentials> {
    return this.client.config.credentials();
  }

  async presign(
    bucket: string,
    key: string,
    options: { expiresInSeconds: number; contentLength?: number | undefined; signingDate?: Date },
  ): Promise<string> {
    let target = this.targets.get(bucket);
    if (!target) {
      target = this.resolve(bucket);
      this.targets.set(bucket, target);
      // A failed resolution is tried again by the next link.
      target.catch(() => this.targets.delete(bucket));
    }
    const { protocol, hostname, port, prefix, signer } = await target;
    const path = `${prefix}/${escapeKey(key)}`;
    if (signer instanceof SigV4Signer) {
      const host = port !== undefined ? `${hostname}:${port}` : hostname;
      // Signing the length makes storage refuse a body of any other size.
      const headers: Record<string, string> = { host };
      if (options.contentLength !== undefined) headers["content-length"] = String(options.contentLength);
      const query = signer.presign(
        { method: "PUT", path, headers, query: { "x-id": "PutObject" } },
        await this.credentials(),
        { expiresInSeconds: options.expiresInSeconds, date: options.signingDate },
      );
      return `${protocol}//${host}${path}?${queryString(query)}`;
    }
    const headers: Record<string, string> = {};
    if (options.contentLength !== undefined) headers["content-length"] = String(options.contentLength);
    const request = new HttpRequest({
      method: "PUT",
      protocol,
      hostname,
      ...(port !== undefined ? { port } : {}),
      path,
      query: { "x-id": "PutObject" },
      headers,
    });
    const signed = await signer.presign(request, {
      expiresIn: options.expiresInSeconds,
      // Signing the length makes storage refuse a body of any other size.
      ...(options.contentLength !== undefined ? { signableHeaders: new Set(["content-length"]) } : {}),
      ...(options.signingDate ? { signingDate: options.signingDate } : {}),
    });
    return formatUrl(signed);
  }

  private async resolve(bucket: string): Promise<BucketTarget> {
    const config = this.client.config;
    const endpoint = await getEndpointFromInstructions(
      { Bucket: bucket, Key: "key" },
      PutObjectCommand as never,
      config as never,
    );
    const scheme = endpoint.properties?.authSchemes?.[0] as
      | { name?: string; signingName?: string; signingRegion?: string; signingRegionSet?: string[] }
      | undefined;
    const region = scheme?.name === "sigv4a" ? scheme.signingRegionSet?.join(",") : scheme?.signingRegion;
    const url = endpoint.url;
    return {
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port ? Number(url.port) : undefined,
      prefix: url.pathname.replace(/\/$/, ""),
      signer:
        scheme?.name === "sigv4a" || region === undefined
          ? new S3RequestPresigner({
              ...config,
              signingName: scheme?.signingName,
              region: async () => region,
            } as never)
          : new SigV4Signer(scheme?.signingName ?? "s3", region),
    };
  }
}
