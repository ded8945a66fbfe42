import { createHash, randomBytes } from "node:crypto";
import { ListMultipartUploadsCommand, UploadPartCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApi, TEST_PART_SIZE, type TestApi, testApi } from "./multipart-server.ts";
import { getStack, s3Client, waitForStatus } from "./setup/stack.ts";

interface Plan {
  method: string;
  part_size: number;
  part_count: number;
  expires_at: string;
  parts_url: string;
  complete_url: string;
  cancel_url: string;
}

interface SignedPart {
  part_number: number;
  size: number;
  method: string;
  url: string;
  headers: Record<string, string>;
}

let server: TestApi;
const alice = () => getStack().tokens.alice;
const call = (path: string, init: RequestInit = {}, token = alice()) =>
  testApi(server.url, path, init, token);

beforeAll(async () => {
  server = await startTestApi();
});
afterAll(async () => {
  await server?.close();
});

/** Creates an image declaring `data`'s size and returns its id and multipart plan. */
async function createLarge(
  data: Buffer,
  extra: Record<string, unknown> = {},
): Promise<{ id: string; plan: Plan }> {
  const res = await call("/v2/images", {
    method: "POST",
    body: JSON.stringify({
      name: "multipart",
      disk_format: "raw",
      container_format: "bare",
      upload_size: data.length,
      ...extra,
    }),
  });
  expect(res.status).toBe(201);
  const image = (await res.json()) as { id: string; upload: Plan };
  return { id: image.id, plan: image.upload };
}

async function sign(plan: Plan, parts: number[]): Promise<SignedPart[]> {
  const res = await call(plan.parts_url, { method: "POST", body: JSON.stringify({ parts }) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { parts: SignedPart[] }).parts;
}

const slice = (data: Buffer, plan: Plan, n: number) =>
  data.subarray((n - 1) * plan.part_size, Math.min(data.length, n * plan.part_size));

/** PUTs parts the way any client would: the link, its headers, the part's bytes. */
async function putParts(data: Buffer, plan: Plan, parts: number[]): Promise<void> {
  for (const link of await sign(plan, parts)) {
    const res = await fetch(link.url, {
      method: link.method,
      headers: link.headers,
      body: slice(data, plan, link.part_number),
    });
    expect(res.status, await res.text()).toBe(200);
  }
}

async function errorOf(res: Response): Promise<{ code: number; reason: string; message: string }> {
  return ((await res.json()) as { error: { code: number; reason: string; message: string } }).error;
}

async function pendingUploads(id: string): Promise<string[]> {
  const out = await s3Client().send(
    // MinIO lists multipart uploads only for an exact key.
    new ListMultipartUploadsCommand({ Bucket: getStack().bucket, Prefix: `staging/${id}/upload` }),
  );
  return (out.Uploads ?? []).map((u) => u.UploadId ?? "");
}

describe("multipart uploads on MinIO", () => {
  it("plans parts, signs them, completes with a late sha256 and imports to active with the right digests", async () => {
    const data = randomBytes(2 * TEST_PART_SIZE + 1234);
    const { id, plan } = await createLarge(data);
    expect(plan).toMatchObject({
      method: "multipart",
      part_size: TEST_PART_SIZE,
      part_count: 3,
      parts_url: `/v2/images/${id}/upload/parts`,
      complete_url: `/v2/images/${id}/upload/complete`,
      cancel_url: `/v2/images/${id}/upload/cancel`,
    });
    const signed = await sign(plan, [3, 1]);
    expect(signed.map((p) => [p.part_number, p.headers["Content-Length"]])).toEqual([
      [3, "1234"],
      [1, String(TEST_PART_SIZE)],
    ]);
    // Out of order and in two rounds, as a resuming client would.
    await putParts(data, plan, [3]);
    await putParts(data, plan, [1, 2]);
    const listed = (await (await call(plan.parts_url)).json()) as {
      parts: { part_number: number; size: number }[];
    };
    expect(listed.parts.map((p) => [p.part_number, p.size])).toEqual([
      [1, TEST_PART_SIZE],
      [2, TEST_PART_SIZE],
      [3, 1234],
    ]);

    const sha256 = createHash("sha256").update(data).digest("hex");
    const done = await call(plan.complete_url, {
      method: "POST",
      body: JSON.stringify({ upload_sha256: sha256 }),
    });
    expect(done.status).toBe(202);

    const image = await waitForStatus(id, "active", alice(), 60_000);
    expect(image).toMatchObject({
      size: data.length,
      upload_sha256: sha256,
      checksum: createHash("md5").update(data).digest("hex"),
      os_hash_algo: "sha512",
      os_hash_value: createHash("sha512").update(data).digest("hex"),
      upload: null,
    });
    expect(await pendingUploads(id)).toEqual([]);
  });

  it("storage refuses a part of another length than the one signed", async () => {
    const data = randomBytes(TEST_PART_SIZE + 10);
    const { plan } = await createLarge(data);
    const [link] = await sign(plan, [2]);
    const res = await fetch(link?.url ?? "", { method: "PUT", headers: {}, body: Buffer.alloc(9) });
    expect(res.status).toBe(403);
  });

  it("refuses completion with a missing part, naming it, and with a part of the wrong size", async () => {
    const data = randomBytes(2 * TEST_PART_SIZE + 100);
    const { id, plan } = await createLarge(data);
    await putParts(data, plan, [1, 3]);
    const missing = await call(plan.complete_url, { method: "POST" });
    expect(missing.status).toBe(409);
    const err = await errorOf(missing);
    expect(err.reason).toBe("MISSING_PARTS");
    expect(err.message).toContain("lacks 1 of 3 parts: 2");

    // A part of the wrong size can only come from outside the plan's links: write one with storage's own API.
    const uploads = await pendingUploads(id);
    expect(uploads).toHaveLength(1);
    const out = await s3Client().send(
      new UploadPartCommand({
        Bucket: getStack().bucket,
        Key: `staging/${id}/upload`,
        UploadId: uploads[0],
        PartNumber: 2,
        Body: Buffer.alloc(TEST_PART_SIZE - 1),
      }),
    );
    expect(out.ETag).toBeTruthy();
    const wrong = await call(plan.complete_url, { method: "POST" });
    expect(wrong.status).toBe(409);
    expect(await errorOf(wrong)).toMatchObject({
      reason: "PART_SIZE_MISMATCH",
      message: expect.stringContaining(`part 2 has ${TEST_PART_SIZE - 1} bytes, not ${TEST_PART_SIZE}`),
    });
    const image = (await (await call(`/v2/images/${id}`)).json()) as { status: string };
    expect(image.status).toBe("queued");
  });

  it("cancels: storage upload aborted, image queued with a fresh, empty plan", async () => {
    const data = randomBytes(TEST_PART_SIZE + 10);
    const { id, plan } = await createLarge(data);
    await putParts(data, plan, [1]);
    const [before] = await pendingUploads(id);
    const res = await call(plan.cancel_url, { method: "POST" });
    expect(res.status).toBe(204);
    const after = await pendingUploads(id);
    expect(after).toHaveLength(1);
    expect(after[0]).not.toBe(before);
    const listed = (await (await call(plan.parts_url)).json()) as { parts: unknown[] };
    expect(listed.parts).toEqual([]);
    const image = (await (await call(`/v2/images/${id}`)).json()) as { status: string; upload: Plan };
    expect(image.status).toBe("queued");
    expect(image.upload.method).toBe("multipart");
  });

  it("kills the image with DIGEST_MISMATCH when the sha256 declared at completion does not match", async () => {
    const data = randomBytes(TEST_PART_SIZE + 77);
    const { id, plan } = await createLarge(data);
    await putParts(data, plan, [1, 2]);
    const res = await call(plan.complete_url, {
      method: "POST",
      body: JSON.stringify({ upload_sha256: "0".repeat(64) }),
    });
    expect(res.status).toBe(202);
    const image = await waitForStatus(id, "killed", alice(), 60_000);
    expect(image.failure).toMatchObject({ reason: "DIGEST_MISMATCH" });
  });

  it("lets only the owner's project use the plan", async () => {
    const data = randomBytes(TEST_PART_SIZE + 1);
    const { plan } = await createLarge(data);
    const bob = getStack().tokens.bob;
    expect((await call(plan.parts_url, {}, bob)).status).toBe(404);
    expect((await call(plan.complete_url, { method: "POST" }, bob)).status).toBe(404);
    expect((await call(plan.parts_url, { method: "POST", body: '{"parts":[0]}' })).status).toBe(400);
  });

  it("the sweeper aborts an abandoned upload and resets the image's plan", async () => {
    const data = randomBytes(TEST_PART_SIZE + 5);
    const { id, plan } = await createLarge(data);
    await putParts(data, plan, [1]);
    expect(await pendingUploads(id)).toHaveLength(1);
    // A sweeper that counts one second of silence as abandonment; storage times have second resolution.
    const sweeping = await startTestApi({ HANGAR_UPLOAD_ABANDON_AFTER: "1" });
    try {
      await new Promise((r) => setTimeout(r, 2100));
      const report = await sweeping.hangar.sweep();
      expect(report.abortedUploads).toBeGreaterThanOrEqual(1);
      expect(report.resetImages).toBeGreaterThanOrEqual(1);
    } finally {
      await sweeping.close();
    }
    expect(await pendingUploads(id)).toEqual([]);
    const image = (await (await call(`/v2/images/${id}`)).json()) as { status: string; upload: Plan };
    expect(image.status).toBe("queued");
    // The plan still stands; asking for links starts a new storage upload, and the image can still finish.
    await putParts(data, plan, [1, 2]);
    expect(await pendingUploads(id)).toHaveLength(1);
    expect((await call(plan.complete_url, { method: "POST" })).status).toBe(202);
    await waitForStatus(id, "active", alice(), 60_000);
  });
});
