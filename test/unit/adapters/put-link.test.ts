import { PutObjectCommand } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createS3Client } from "../../../functions/adapters/s3/object-store.ts";
import { PutLinkSigner } from "../../../functions/adapters/s3/put-link.ts";
import { useAwsKeys } from "../../aws-keys.ts";

// Static keys: signing needs credentials, never a network.
let restoreKeys: () => void;
beforeAll(() => {
  restoreKeys = useAwsKeys("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
});
afterAll(() => restoreKeys());

describe("presigned PutObject links", () => {
  const signingDate = new Date("2026-12-07T10:00:00Z");
  const endpoints = ["http://127.0.0.1:9000", "http://localhost:9000/", undefined];
  const buckets = ["hangar-bucket", "hangar.dotted"];
  const keys = ["staging/6f1c2a3b-1d2e-4f50-8a9b-0c1d2e3f4a5b/upload", "a b/c+d!(x)*'~.e"];

  it.each(endpoints)("are the URL getSignedUrl gives, byte for byte (endpoint %s)", async (endpoint) => {
    const client = createS3Client("eu-west-1", endpoint);
    const links = new PutLinkSigner(client);
    for (const bucket of buckets) {
      for (const key of keys) {
        for (const contentLength of [undefined, 0, 1234]) {
          const sized = contentLength !== undefined;
          const want = await getSignedUrl(
            client,
            new PutObjectCommand({
              Bucket: bucket,
              Key: key,
              ...(sized ? { ContentLength: contentLength } : {}),
            }),
            {
              expiresIn: 3600,
              signingDate,
              ...(sized ? { signableHeaders: new Set(["content-length"]) } : {}),
            },
          );
          const got = await links.presign(bucket, key, {
            expiresInSeconds: 3600,
            contentLength,
            signingDate,
          });
          expect(got).toBe(want);
        }
      }
    }
  });

  it("carry the session token of temporary keys as getSignedUrl does", async () => {
    process.env.AWS_SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////token=";
    try {
      const client = createS3Client("eu-west-1", "http://127.0.0.1:9000");
      const command = new PutObjectCommand({ Bucket: "b", Key: "staging/k", ContentLength: 7 });
      const options = { expiresIn: 900, signingDate, signableHeaders: new Set(["content-length"]) };
      const want = await getSignedUrl(client, command, options);
      expect(want).toContain("X-Amz-Security-Token=");
      const links = new PutLinkSigner(client);
      expect(
        await links.presign("b", "staging/k", { expiresInSeconds: 900, contentLength: 7, signingDate }),
      ).toBe(want);
    } finally {
      delete process.env.AWS_SESSION_TOKEN;
    }
  });

  it("sign the declared length, so storage refuses any other", async () => {
    const links = new PutLinkSigner(createS3Client("eu-west-1", "http://127.0.0.1:9000"));
    const url = new URL(await links.presign("b", "k", { expiresInSeconds: 60, contentLength: 5 }));
    expect(url.searchParams.get("X-Amz-SignedHeaders")).toBe("content-length;host");
    expect(url.searchParams.get("X-Amz-Expires")).toBe("60");
  });
});
