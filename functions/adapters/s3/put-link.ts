import type { S3Client } from "@aws-sdk/client-s3";
import { formatUrl } from "@aws-sdk/core/util";
import { HttpRequest } from "@smithy/core/protocols";
import { queryString, type SigningCredentials, SigV4Signer } from "../aws/sigv4.ts";
import { BucketTargets, escapeKey } from "./bucket-target.ts";

/**
 * Presigned `PutObject` links, the URL the SDK's `getSignedUrl` gives for a `PutObjectCommand`, without
 * running the command's middleware stack and building a signer for every link: the bucket's endpoint is
 * resolved once, and the link is signed by Hangar's SigV4 signer (`aws/sigv4.ts`), which keeps the day's
 * signing key and writes the canonical request directly. On a show of a queued image the SDK's presigner
 * was still about a tenth of the API function's CPU.
 */
export class PutLinkSigner {
  private readonly targets: BucketTargets;

  constructor(private readonly client: S3Client) {
    this.targets = new BucketTargets(client);
  }

  /** The client's keys (its provider keeps them until they near their expiry). */
  private credentials(): Promise<SigningCredentials> {
    return this.client.config.credentials();
  }

  async presign(
    bucket: string,
    key: string,
    options: { expiresInSeconds: number; contentLength?: number | undefined; signingDate?: Date },
  ): Promise<string> {
    const { protocol, hostname, port, host, prefix, signer } = await this.targets.get(bucket);
    const path = `${prefix}/${escapeKey(key)}`;
    if (signer instanceof SigV4Signer) {
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
}
