import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { S3RequestPresigner } from "@aws-sdk/s3-request-presigner";
import { getEndpointFromInstructions } from "@smithy/core/endpoints";
import { SigV4Signer } from "../aws/sigv4.ts";

/** Where a bucket's objects are addressed and how requests to them are signed, as the SDK resolves it. */
export interface BucketTarget {
  protocol: string;
  hostname: string;
  port: number | undefined;
  /** `hostname[:port]`, the `host` header. */
  host: string;
  /** The path before the key: `/<bucket>` with path-style addressing, empty with virtual hosts. */
  prefix: string;
  /** Hangar's SigV4 signer for the bucket's region; the SDK's presigner where it signs with SigV4a. */
  signer: SigV4Signer | S3RequestPresigner;
}

/** A key as the SDK writes it into a path: each segment URI-escaped (also `!'()*`), slashes kept. */
export const escapeKey = (key: string) =>
  key
    .split("/")
    .map((s) =>
      encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`),
    )
    .join("/");

/**
 * Each bucket's target for one client, resolved once by the SDK's endpoint rules (addressing style,
 * region, signing scheme) and kept: requests Hangar signs itself then cost no endpoint resolution.
 */
export class BucketTargets {
  private readonly targets = new Map<string, Promise<BucketTarget>>();

  constructor(private readonly client: S3Client) {}

  get(bucket: string): Promise<BucketTarget> {
    let target = this.targets.get(bucket);
    if (!target) {
      target = this.resolve(bucket);
      this.targets.set(bucket, target);
      // A failed resolution is tried again by the next request.
      target.catch(() => this.targets.delete(bucket));
    }
    return target;
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
    const port = url.port ? Number(url.port) : undefined;
    return {
      protocol: url.protocol,
      hostname: url.hostname,
      port,
      host: port !== undefined ? `${url.hostname}:${port}` : url.hostname,
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
