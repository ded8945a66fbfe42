import { createHash, createHmac } from "node:crypto";
import { SignatureV4 } from "@smithy/signature-v4";
import { describe, expect, it } from "vitest";
import { SigV4Signer } from "../../../functions/adapters/aws/sigv4.ts";

/** SHA-256 and HMAC-SHA-256 from node:crypto, as the SDK's signer takes them. */
type Data = string | ArrayBuffer | ArrayBufferView;
const bytes = (d: Data) =>
  typeof d === "string"
    ? d
    : ArrayBuffer.isView(d)
      ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength)
      : new Uint8Array(d);
class Sha256 {
  private readonly hash;
  constructor(secret?: Data) {
    this.hash = secret === undefined ? createHash("sha256") : createHmac("sha256", bytes(secret));
  }
  update(data: Data): void {
    this.hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
}

const keys = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" };
const session = { ...keys, sessionToken: "IQoJb3JpZ2luX2VjEJr//////////token=" };

/** The headers the SDK's signer gives the same request. */
async function sdkSigned(
  service: string,
  region: string,
  request: {
    method?: string;
    path: string;
    query?: Record<string, string>;
    headers: Record<string, string>;
    body: string;
  },
  credentials: typeof keys & { sessionToken?: string },
  date: Date,
): Promise<Record<string, string>> {
  // As the S3 client builds its signer: the path is signed as sent.
  const signer = new SignatureV4({
    service,
    region,
    credentials,
    sha256: Sha256,
    uriEscapePath: service !== "s3",
  });
  const signed = await signer.sign(
    {
      method: request.method ?? "POST",
      protocol: "https:",
      hostname: request.headers.host ?? "",
      path: request.path,
      query: request.query ?? {},
      headers: request.headers,
      body: request.body,
    },
    { signingDate: date },
  );
  return signed.headers;
}

describe("SigV4Signer", () => {
  const cases: { service: string; path: string; headers: Record<string, string>; body: string }[] = [
    {
      service: "dynamodb",
      path: "/",
      headers: {
        "content-type": "application/x-amz-json-1.0",
        "x-amz-target": "DynamoDB_20120810.GetItem",
      },
      body: '{"TableName":"hangar","Key":{"pk":{"S":"IMAGE#1"}},"ConsistentRead":true}',
    },
    {
      service: "events",
      path: "/",
      headers: { "content-type": "application/x-amz-json-1.1", "x-amz-target": "AWSEvents.PutEvents" },
      body: '{"Entries":[{"Detail":"{\\"a\\": \\"é ü\\"}"}]}',
    },
    {
      // The function's name escaped once by the caller, and again by canonicalisation; odd segments.
      service: "lambda",
      path: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A1%3Afunction%3Aweb/./x/../invocations",
      headers: { "content-type": "application/json", "x-amz-invocation-type": "Event", "user-agent": "x" },
      body: "",
    },
    {
      service: "states",
      path: "/a b/(c)*!'/",
      headers: { "content-type": "application/x-amz-json-1.0", "x-amz-meta": "  spaced \t  out  " },
      body: "{}",
    },
  ];

  it.each(cases)("signs as the SDK's SignatureV4 does ($service $path)", async (c) => {
    for (const credentials of [keys, session]) {
      for (const date of [new Date("2026-12-07T23:59:59.999Z"), new Date("2026-12-08T00:00:00Z")]) {
        for (const region of ["eu-west-1", "us-east-1"]) {
          const headers: Record<string, string> = {
            host: `${c.service}.${region}.amazonaws.com`,
            "content-length": String(Buffer.byteLength(c.body)),
            ...c.headers,
          };
          const request = { method: "POST", path: c.path, headers, body: c.body };
          const ours = new SigV4Signer(c.service, region).sign(request, credentials, date);
          expect(ours).toEqual(await sdkSigned(c.service, region, request, credentials, date));
        }
      }
    }
  });

  it("signs an S3 request with a query string as the S3 client's signer does", async () => {
    const paths = ["/bucket/images/0b7c/data", "/images/a%20b/%28c%29%2A%21%27/part", "/b/k/../x//y"];
    const queries: Record<string, string>[] = [
      { partNumber: "7", uploadId: "2~Zx_y.VtAb+/=Q-" },
      { uploadId: "é ü", partNumber: "10000", "x-id": "UploadPartCopy" },
    ];
    for (const path of paths) {
      for (const query of queries) {
        for (const credentials of [keys, session]) {
          const date = new Date("2026-12-07T23:59:59.999Z");
          const headers: Record<string, string> = {
            host: "bucket.s3.eu-west-1.amazonaws.com",
            "x-amz-copy-source": "/bucket/staging/0b7c/upload?versionId=3%2Fx",
            "x-amz-copy-source-range": "bytes=0-8388607",
            "x-amz-copy-source-if-match": '"9b2cf535f27731c974343645a3985328"',
            "content-length": "0",
          };
          const request = { method: "PUT", path, query, headers, body: "" };
          const ours = new SigV4Signer("s3", "eu-west-1").sign(request, credentials, date);
          expect(ours).toEqual(await sdkSigned("s3", "eu-west-1", request, credentials, date));
        }
      }
    }
  });

  it("keeps the day's key only for the keys and the day it was derived from", async () => {
    const signer = new SigV4Signer("dynamodb", "eu-west-1");
    const request = { method: "POST", path: "/", headers: { host: "h", "x-amz-target": "T" }, body: "{}" };
    const day1 = new Date("2026-12-07T12:00:00Z");
    const day2 = new Date("2026-12-08T12:00:00Z");
    const other = { ...keys, secretAccessKey: "another-secret" };
    // Alternating days and keys: a kept key from the wrong day or secret would give a wrong signature.
    for (const [credentials, date] of [
      [keys, day1],
      [keys, day2],
      [other, day2],
      [keys, day2],
      [keys, day1],
    ] as const) {
      expect(signer.sign(request, credentials, date).authorization).toBe(
        (await sdkSigned("dynamodb", "eu-west-1", request, credentials, date)).authorization,
      );
    }
  });
});
