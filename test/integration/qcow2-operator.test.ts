import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../functions/config.ts";
import type { Logger } from "../../functions/core/ports.ts";
import {
  createInProcessHangar as createHangar,
  type InProcessHangar as Hangar,
} from "../../infra/local/in-process.ts";
import { hangarEnv } from "../../infra/local/stack.ts";
import { qcow2DataRanges } from "../unit/convert/helpers.ts";
import { getStack, mintToken, s3Client, signingKey, uploadThroughLink } from "./setup/stack.ts";

// An operator who prefers qcow2 and accepts qcow2 as it is. The shared stack's importer follows the
// default policy (raw), so this file runs its own Hangar in-process against the same MinIO and
// DynamoDB Local, on a bucket of its own with no notification: only this importer sees its uploads.

const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");
const qemuImg = (...args: string[]) =>
  execFileSync("qemu-img", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
const quiet: Logger = { info: () => {}, warn: () => {}, error: () => {} };

const bucket = `hangar-qcow2-${process.pid}`;
let dir: string;
let source: string;
let hangar: Hangar;
let token: string;
const savedEnv = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };

beforeAll(async () => {
  const info = getStack();
  await s3Client().send(new CreateBucketCommand({ Bucket: bucket }));
  // The SDK's default credential chain reads these, as in a Lambda.
  process.env.AWS_ACCESS_KEY_ID = info.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = info.secretAccessKey;
  hangar = createHangar(
    loadConfig({
      ...hangarEnv(info, signingKey()),
      HANGAR_BUCKET: bucket,
      HANGAR_PREFERRED_FORMAT: "qcow2",
      HANGAR_ACCEPTED_FORMATS: "qcow2,iso",
    }),
    { log: quiet },
  );
  token = await mintToken({ sub: "quinn", project_id: "qcow2-operator", roles: ["member"] });
  dir = mkdtempSync(join(tmpdir(), "hangar-qcow2-"));
  // 8 MiB: random data, a stretch of written zeros and one byte at the end of a cluster.
  const disk = Buffer.alloc(8 * 1024 * 1024);
  randomBytes(700 * 1024).copy(disk, 64 * 1024);
  disk[5 * 1024 * 1024 - 1] = 0x5a;
  randomBytes(300 * 1024).copy(disk, 6 * 1024 * 1024 + 4096);
  source = join(dir, "source.raw");
  writeFileSync(source, disk);
});

afterAll(async () => {
  const s3 = s3Client();
  const left = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
  for (const o of left.Contents ?? []) {
    await hangar.app.request(`/v2/images/${o.Key?.split("/")[1]}`, {
      method: "DELETE",
      headers: { "x-auth-token": token },
    });
  }
  await s3.send(new DeleteBucketCommand({ Bucket: bucket })).catch(() => undefined);
  process.env.AWS_ACCESS_KEY_ID = savedEnv.id;
  process.env.AWS_SECRET_ACCESS_KEY = savedEnv.secret;
  rmSync(dir, { recursive: true, force: true });
});

async function call(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("x-auth-token", token);
  if (init.body) headers.set("content-type", "application/json");
  return hangar.app.request(path, { ...init, headers });
}

/** Creates an image, uploads `bytes` to its link and delivers the object's event to the importer. */
async function importBytes(bytes: Uint8Array, name: string): Promise<Record<string, unknown>> {
  const created = await uploadThroughLink(
    await call("/v2/images", { method: "POST", body: JSON.stringify({ name }) }),
    bytes,
  );
  // Path-style link: /<bucket>/<key>.
  const key = decodeURIComponent(new URL(created.url).pathname).slice(bucket.length + 2);
  const outcomes = await hangar.handleStorageEvent({
    Records: [
      {
        eventName: "ObjectCreated:Put",
        s3: { bucket: { name: bucket }, object: { key: encodeURIComponent(key), size: bytes.length } },
      },
    ],
  });
  expect(outcomes.map((o) => o.outcome)).toEqual(["active"]);
  const shown = await call(`/v2/images/${created.id}`);
  expect(shown.status).toBe(200);
  return (await shown.json()) as Record<string, unknown>;
}

async function stored(id: unknown): Promise<Uint8Array> {
  const out = await s3Client().send(new GetObjectCommand({ Bucket: bucket, Key: `images/${id}` }));
  return (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray();
}

function virtualSize(file: string, format: string): number {
  return (JSON.parse(qemuImg("info", "--output=json", "-f", format, file)) as { "virtual-size": number })[
    "virtual-size"
  ];
}

const CASES: { label: string; sourceFormat: string; make: (file: string) => Uint8Array }[] = [
  { label: "raw", sourceFormat: "raw", make: () => readFileSync(source) },
  { label: "gzip-wrapped raw", sourceFormat: "raw+gzip", make: () => gzipSync(readFileSync(source)) },
  {
    label: "vmdk streamOptimized",
    sourceFormat: "vmdk",
    make: (file) => {
      qemuImg("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", source, file);
      return readFileSync(file);
    },
  },
  {
    label: "gzip-wrapped vhd fixed",
    sourceFormat: "vhd+gzip",
    make: (file) => {
      qemuImg("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", source, file);
      return gzipSync(readFileSync(file));
    },
  },
  {
    label: "vhd dynamic",
    sourceFormat: "vhd",
    make: (file) => {
      qemuImg("convert", "-f", "raw", "-O", "vpc", source, file);
      return readFileSync(file);
    },
  },
  ...(
    [
      ["vmdk monolithicSparse", "vmdk", ["-O", "vmdk"]],
      ["vhdx", "vhdx", ["-O", "vhdx"]],
      ["vdi", "vdi", ["-O", "vdi"]],
    ] as const
  ).map(([label, sourceFormat, args]) => ({
    label,
    sourceFormat,
    make: (file: string) => {
      qemuImg("convert", "-f", "raw", ...args, source, file);
      return readFileSync(file);
    },
  })),
];

describe("an operator who prefers qcow2", { timeout: 60_000 }, () => {
  for (const c of CASES) {
    it(`stores a ${c.label} upload as a qcow2 that qemu-img checks, compares equal and maps as its own`, async () => {
      const upload = join(dir, `${c.label.replace(/\W+/g, "-")}.img`);
      const bytes = c.make(upload);
      const image = await importBytes(bytes, c.label);
      const out = await stored(image.id);
      expect(image).toMatchObject({
        status: "active",
        disk_format: "qcow2",
        source_format: c.sourceFormat,
        converted: true,
        size: out.length,
        // A VHD's size is rounded up to its disk geometry: qemu-img says by how much.
        virtual_size: c.sourceFormat.split("+")[0] === "vhd" ? virtualSize(upload, "vpc") : 8 * 1024 * 1024,
        checksum: hex("md5", out),
        os_hash_algo: "sha512",
        os_hash_value: hex("sha512", out),
      });
      const file = join(dir, `${image.id}.qcow2`);
      writeFileSync(file, out);
      const check = JSON.parse(qemuImg("check", "--output=json", "-f", "qcow2", file)) as Record<
        string,
        unknown
      >;
      expect(check).toMatchObject({ "check-errors": 0 });
      expect(check.leaks ?? 0).toBe(0);
      expect(qemuImg("compare", "-f", "raw", "-F", "qcow2", source, file)).toContain("identical");
      // As compact as qemu-img's own conversion: the written zeros are not stored.
      const reference = join(dir, `${image.id}.reference.qcow2`);
      qemuImg("convert", "-f", "raw", "-O", "qcow2", source, reference);
      expect(qcow2DataRanges(file)).toEqual(qcow2DataRanges(reference));
    });
  }

  it("stores a qcow2 upload as it is", async () => {
    const file = join(dir, "as-is.qcow2");
    qemuImg("convert", "-f", "raw", "-O", "qcow2", source, file);
    const bytes = readFileSync(file);
    const image = await importBytes(bytes, "as-is");
    expect(image).toMatchObject({ disk_format: "qcow2", converted: false, checksum: hex("md5", bytes) });
    expect(hex("sha256", await stored(image.id))).toBe(hex("sha256", bytes));
  });

  it("shows its policy at /v2/info/import", async () => {
    const res = await call("/v2/info/import");
    expect(res.status).toBe(200);
    expect(JSON.stringify(await res.json())).toMatch(/"preferred_format":"qcow2"/);
  });
});
