import { createHash, randomBytes } from "node:crypto";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { readFileSync } from "node:fs";
import https from "node:https";
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { afterAll, describe, expect, it } from "vitest";
import { copySource } from "../../functions/adapters/s3/copy.ts";
import { createS3Client } from "../../functions/adapters/s3/object-store.ts";
import { partCopier, partCopyChannel } from "../../functions/adapters/s3/part-copy.ts";
import { useAwsKeys } from "../aws-keys.ts";
import { storedObject } from "./setup/objects.ts";
import { closeServices, scriptedService } from "./setup/scripted-service.ts";
import { getStack, s3Client } from "./setup/stack.ts";
import { startTlsProxy } from "./setup/tls-proxy.ts";

const MiB = 1024 * 1024;
const md5 = (b: Uint8Array) => createHash("md5").update(b).digest("hex");

// The copier signs with the client's keys, which the function's client takes from the environment.
const info = getStack();
const restoreKeys = useAwsKeys(info.accessKeyId, info.secretAccessKey);
afterAll(async () => {
  restoreKeys();
  await closeServices();
});

/** Copies the requests sent with `run`, counted as they go. */
async function counted<T>(run: () => Promise<T>): Promise<{ result: T | unknown; requests: number }> {
  let requests = 0;
  const count = () => {
    requests++;
  };
  subscribe(partCopyChannel.name, count);
  try {
    const result = await run().catch((err: unknown) => err);
    return { result, requests };
  } finally {
    unsubscribe(partCopyChannel.name, count);
  }
}

describe("part copies Hangar signs and sends itself", () => {
  const client = createS3Client(info.region, info.s3Endpoint);
  const bucket = info.bucket;
  const copier = partCopier(client);
  const put = async (key: string, body: Uint8Array) =>
    (await s3Client().send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }))) as {
      ETag?: string;
      VersionId?: string;
    };

  it("copies ranges into parts, from and to keys of any spelling and from a version, each part's ETag the md5 of its bytes", async () => {
    // Spaces, a plus, SigV4's extra escapes and a non-ASCII letter, in both keys.
    const base = `test/part-copy/${randomBytes(4).toString("hex")}/a b+c!'()*é`;
    const old = randomBytes(6 * MiB + 7);
    const current = randomBytes(6 * MiB + 7);
    const first = await put(`${base}/source`, old);
    await put(`${base}/source`, current);
    expect(first.VersionId).toBeTruthy();
    const key = `${base}/target (copy)`;
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    const source = copySource(bucket, `${base}/source`);
    const parts = [
      // Part 1: the current bytes' first 5 MiB, on its ETag; part 2: the rest of the first version.
      { partNumber: 1, source, first: 0, last: 5 * MiB - 1, ifMatch: `"${md5(current)}"` },
      {
        partNumber: 2,
        source: `${source}?versionId=${encodeURIComponent(first.VersionId ?? "")}`,
        first: 5 * MiB,
        last: old.length - 1,
      },
    ];
    const etags = await Promise.all(parts.map((p) => copier.copy({ bucket, key, uploadId: UploadId, ...p })));
    expect(etags).toEqual([`"${md5(current.subarray(0, 5 * MiB))}"`, `"${md5(old.subarray(5 * MiB))}"`]);
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: key,
        UploadId,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ PartNumber: i + 1, ETag })) },
      }),
    );
    const stored = Buffer.from(await storedObject(key));
    expect(stored.equals(Buffer.concat([current.subarray(0, 5 * MiB), old.subarray(5 * MiB)]))).toBe(true);
  });

  it("a refusal is the SDK's error, named by storage's code, and is not tried again", async () => {
    const base = `test/part-copy/${randomBytes(4).toString("hex")}`;
    const bytes = randomBytes(64 * 1024);
    await put(`${base}/source`, bytes);
    const key = `${base}/target`;
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    const part = { bucket, key, uploadId: UploadId, partNumber: 1, first: 0, last: bytes.length - 1 };
    const cases: [Parameters<typeof copier.copy>[0], string, number][] = [
      [
        { ...part, source: copySource(bucket, `${base}/source`), ifMatch: '"0123"' },
        "PreconditionFailed",
        412,
      ],
      [{ ...part, source: copySource(bucket, `${base}/missing`) }, "NoSuchKey", 404],
      [
        { ...part, uploadId: "no-such-upload", source: copySource(bucket, `${base}/source`) },
        "NoSuchUpload",
        404,
      ],
    ];
    for (const [input, name, status] of cases) {
      const { result, requests } = await counted(() => copier.copy(input));
      expect(result).toBeInstanceOf(S3ServiceException);
      expect(result).toMatchObject({ name, $metadata: { httpStatusCode: status } });
      expect(requests).toBe(1);
    }
  });
});

describe("part copies over TLS", () => {
  // As in AWS: an https endpoint. A TLS proxy with a certificate made for the test stands in front of
  // MinIO; the copier's connections (node:https's global agent) trust it for this test only.
  it("copies a part over an https endpoint, storage checking the signature made for that address", async () => {
    const proxy = await startTlsProxy(new URL(info.s3Endpoint));
    const agent = https.globalAgent as https.Agent & { options: https.AgentOptions };
    const trusted = agent.options.ca;
    agent.options.ca = readFileSync(proxy.certFile);
    try {
      const bucket = info.bucket;
      const key = `test/part-copy/${randomBytes(4).toString("hex")}/over tls`;
      const bytes = randomBytes(256 * 1024);
      await s3Client().send(new PutObjectCommand({ Bucket: bucket, Key: `${key}.source`, Body: bytes }));
      const plain = createS3Client(info.region, info.s3Endpoint);
      const { UploadId } = await plain.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
      const copier = partCopier(createS3Client(info.region, proxy.endpoint));
      let sent = 0;
      const count = ({ request }: { request: { host?: string; protocol?: string } }) => {
        if (request.protocol === "https:") sent++;
      };
      subscribe("http.client.request.start", count as (message: unknown) => void);
      const etag = await copier
        .copy({
          bucket,
          key,
          uploadId: UploadId,
          partNumber: 1,
          source: copySource(bucket, `${key}.source`),
          first: 0,
          last: bytes.length - 1,
        })
        .finally(() => unsubscribe("http.client.request.start", count as (message: unknown) => void));
      expect(sent).toBe(1);
      expect(etag).toBe(`"${md5(bytes)}"`);
      await plain.send(
        new CompleteMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          UploadId,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: etag }] },
        }),
      );
      expect(Buffer.from(await storedObject(key)).equals(bytes)).toBe(true);
    } finally {
      agent.options.ca = trusted;
      proxy.close();
    }
  });
});

describe("part copies against a storage that fails", () => {
  /** A storage on loopback that answers the n-th request as told. */
  async function storage(answer: Parameters<typeof scriptedService>[0]) {
    const { endpoint, requests } = await scriptedService(answer);
    return { copier: partCopier(createS3Client("us-east-1", endpoint)), requests };
  }
  const part = {
    bucket: "b",
    key: "images/x/data",
    uploadId: "u",
    partNumber: 3,
    source: "b/staging/x/upload",
    first: 0,
    last: 99,
  };
  const xml = (body: string) => `<?xml version="1.0" encoding="UTF-8"?>\n${body}`;
  const error = (code: string) => xml(`<Error><Code>${code}</Code><Message>m ${code}</Message></Error>`);
  const result = xml(
    "<CopyPartResult><LastModified>2026-12-07T00:00:00.000Z</LastModified><ETag>&quot;abc&quot;</ETag></CopyPartResult>",
  );

  it("an error inside a 200, throttling and storage's faults are tried again, three attempts in all", async () => {
    const seen: string[] = [];
    const flaky = await storage((req, res, n) => {
      seen.push(`${req.method} ${req.url} ${req.headers["x-amz-copy-source-range"]}`);
      if (n === 1) res.writeHead(200).end(error("InternalError"));
      else if (n === 2) res.writeHead(503).end(error("SlowDown"));
      else res.writeHead(200).end(result);
    });
    await expect(flaky.copier.copy(part)).resolves.toBe('"abc"');
    expect(seen).toEqual(Array(3).fill("PUT /b/images/x/data?partNumber=3&uploadId=u bytes=0-99"));

    const down = await storage((_req, res) => res.writeHead(200).end(error("InternalError")));
    const err = await down.copier.copy(part).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: "InternalError", message: "m InternalError" });
    expect(down.requests()).toBe(3);
  });

  it("a client's refusal is not tried again, and an abort stops the copy", async () => {
    const refusing = await storage((_req, res) => res.writeHead(403).end(error("AccessDenied")));
    const err = await refusing.copier.copy(part).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: "AccessDenied", $fault: "client", $metadata: { httpStatusCode: 403 } });
    expect(refusing.requests()).toBe(1);

    const silent = await storage(() => undefined);
    const controller = new AbortController();
    const copying = silent.copier.copy(part, controller.signal).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 100));
    controller.abort();
    expect(await copying).toMatchObject({ name: "AbortError" });
    expect(silent.requests()).toBe(1);
  });
});
