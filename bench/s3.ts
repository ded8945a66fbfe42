/**
 * Hook for (c): end-to-end conversion on MinIO/S3 against a plain SDK streaming copy of the same
 * object, both writing a new key with lib-storage. Not run by `npm run bench` (it needs the local
 * stack); call `measureS3` from a script that has a client, e.g. one built from `.hangar/local.json`.
 * To measure the real importer instead, pass `importImage` and it replaces the converter run.
 */
import { GetObjectCommand, HeadObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { convertToRaw, type SourceFormat } from "../functions/core/convert/index.ts";
import type { RangeReader, SequentialSource } from "../functions/core/convert/ports.ts";

export interface S3BenchOptions {
  client: S3Client;
  bucket: string;
  /** The staged image (e.g. the 1 GiB-virtual qcow2 of bench/run.ts, uploaded once). */
  sourceKey: string;
  format: SourceFormat;
  /** Scratch key prefix for outputs; objects there are overwritten. */
  scratchPrefix: string;
  runs?: number;
  /** Replaces the converter run, e.g. with the importer handler; receives the source key. */
  importImage?: (sourceKey: string) => Promise<void>;
}

export interface S3BenchResult {
  plainCopySeconds: number[];
  convertSeconds: number[];
  /** Median converter (or importer) time over median plain-copy time. */
  ratio: number;
}

const PART = 8 << 20;

/** Ranged GETs over one object. */
export function s3RangeReader(client: S3Client, bucket: string, key: string, size: number): RangeReader {
  return {
    size,
    async read(offset, length, signal) {
      const r = await client.send(
        new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${offset}-${offset + length - 1}` }),
        { abortSignal: signal },
      );
      const bytes = await r.Body?.transformToByteArray();
      if (!bytes || bytes.length !== length) throw new Error(`short ranged read at ${offset}`);
      return bytes;
    },
  };
}

/** One plain GET of the whole object. */
export function s3Sequential(client: S3Client, bucket: string, key: string): SequentialSource {
  return {
    async *stream(signal) {
      const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), {
        abortSignal: signal,
      });
      for await (const chunk of r.Body as AsyncIterable<Uint8Array>) yield chunk;
    },
  };
}

async function upload(
  client: S3Client,
  bucket: string,
  key: string,
  body: AsyncIterable<Uint8Array>,
): Promise<void> {
  const { Readable } = await import("node:stream");
  await new Upload({
    client,
    params: { Bucket: bucket, Key: key, Body: Readable.from(body) },
    partSize: PART,
    queueSize: 4,
  }).done();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] ?? Number.NaN) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

/** Alternates plain copy and conversion `runs` times (default 3) and reports medians as a ratio. */
export async function measureS3(o: S3BenchOptions): Promise<S3BenchResult> {
  const { client, bucket, sourceKey } = o;
  const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: sourceKey }));
  const size = head.ContentLength ?? 0;
  const plainCopySeconds: number[] = [];
  const convertSeconds: number[] = [];
  for (let i = 0; i < (o.runs ?? 3); i++) {
    let t = performance.now();
    await upload(client, bucket, `${o.scratchPrefix}copy`, s3Sequential(client, bucket, sourceKey).stream());
    plainCopySeconds.push((performance.now() - t) / 1000);
    t = performance.now();
    if (o.importImage) {
      await o.importImage(sourceKey);
    } else {
      const source = {
        range: s3RangeReader(client, bucket, sourceKey, size),
        sequential: s3Sequential(client, bucket, sourceKey),
      };
      await upload(
        client,
        bucket,
        `${o.scratchPrefix}raw`,
        convertToRaw(o.format, source, { chunkSize: PART }),
      );
    }
    convertSeconds.push((performance.now() - t) / 1000);
  }
  return { plainCopySeconds, convertSeconds, ratio: median(convertSeconds) / median(plainCopySeconds) };
}
