import { execFile } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import {
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { marshall } from "@aws-sdk/util-dynamodb";
import { describe, expect, it } from "vitest";
import {
  api,
  dynamoDbClient,
  getStack,
  mintToken,
  s3Client,
  uploadThroughLink,
  waitForStatus,
} from "./setup/stack.ts";

const run = promisify(execFile);
const hex = (algo: string, b: Uint8Array) => createHash(algo).update(b).digest("hex");

type Counter = { limit: number; usage: number };
type UsageBody = { project_id: string; usage: Record<string, Counter> };

/** A project of its own for each test, so counts start at zero. */
async function freshProject() {
  const project = `quota-${randomUUID().slice(0, 8)}`;
  const member = await mintToken({ sub: `${project}-user`, project_id: project, roles: ["member"] });
  return { project, member };
}

async function setLimits(project: string, limits: Record<string, number | null>) {
  const res = await api(
    `/v2/quotas/${project}`,
    { method: "PUT", body: JSON.stringify(limits) },
    getStack().tokens.admin,
  );
  expect(res.status, await res.clone().text()).toBe(200);
}

async function usage(token: string, project?: string): Promise<Record<string, number>> {
  const res = await api(`/v2/info/usage${project ? `?project_id=${project}` : ""}`, {}, token);
  expect(res.status, await res.clone().text()).toBe(200);
  const body = (await res.json()) as UsageBody;
  return Object.fromEntries(Object.entries(body.usage).map(([k, v]) => [k, v.usage]));
}

async function create(token: string, body: Record<string, unknown>) {
  return api("/v2/images", { method: "POST", body: JSON.stringify(body) }, token);
}

async function createAndUpload(token: string, bytes: Uint8Array, body: Record<string, unknown> = {}) {
  return (await uploadThroughLink(await create(token, { name: "q", ...body }), bytes)).id;
}

describe("quotas", () => {
  it("a declared upload over image_stage_total is refused at create, with the numbers, before any upload", async () => {
    const { project, member } = await freshProject();
    await setLimits(project, { image_stage_total: 1000 });
    const ok = await create(member, { name: "fits", upload_size: 600 });
    expect(ok.status).toBe(201);
    const refused = await create(member, { name: "too big", upload_size: 500 });
    expect(refused.status).toBe(413);
    const body = (await refused.json()) as { error: { code: number; message: string; reason: string } };
    expect(body.error).toMatchObject({ code: 413, reason: "QUOTA_EXCEEDED" });
    expect(body.error.message).toContain("image_stage_total");
    expect(body.error.message).toContain("600");
    expect(body.error.message).toContain("500");
    expect(body.error.message).toContain("1000");
    const fits = (await ok.json()) as { staged_size: number };
    expect(fits.staged_size).toBe(600);
    expect(await usage(member)).toMatchObject({
      image_stage_total: 600,
      image_count_uploading: 1,
      image_count_total: 1,
    });
  });

  it("20 concurrent creates racing for the last bytes never exceed the limit", async () => {
    const { project, member } = await freshProject();
    await setLimits(project, { image_stage_total: 7 * 1000 });
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => create(member, { name: `race-${i}`, upload_size: 1000 })),
    );
    const statuses = answers.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 201)).toHaveLength(7);
    expect(statuses.filter((s) => s !== 201).every((s) => s === 413)).toBe(true);
    const u = await usage(member);
    expect(u.image_stage_total).toBe(7000);
    expect(u.image_count_total).toBe(7);
  });

  it("10 creates racing 10 deletes in one project all succeed, and usage stays exact", async () => {
    const { project, member } = await freshProject();
    await setLimits(project, { image_count_total: 20, image_stage_total: 20 * 1000 });
    const doomed = [];
    for (let i = 0; i < 10; i++) {
      const res = await create(member, { name: `doomed-${i}`, upload_size: 1000 });
      expect(res.status).toBe(201);
      doomed.push(((await res.json()) as { id: string }).id);
    }
    const [creates, deletes] = await Promise.all([
      Promise.all(
        Array.from({ length: 10 }, (_, i) => create(member, { name: `new-${i}`, upload_size: 500 })),
      ),
      Promise.all(doomed.map((id) => api(`/v2/images/${id}`, { method: "DELETE" }, member))),
    ]);
    const bodies = await Promise.all(creates.map((r) => r.text()));
    expect(
      creates.map((r) => r.status),
      bodies.find((b) => !b.includes('"id"')),
    ).toEqual(creates.map(() => 201));
    expect(deletes.map((r) => r.status)).toEqual(deletes.map(() => 204));
    expect(await usage(member)).toEqual({
      image_count_total: 10,
      image_size_total: 0,
      image_stage_total: 5000,
      image_count_uploading: 10,
    });
  });

  it("creates in a full project racing deletes get 201 or 413, never a conflict, and never pass the limit", async () => {
    const { project, member } = await freshProject();
    await setLimits(project, { image_count_total: 10 });
    const live: string[] = [];
    const seen: number[] = [];
    for (let round = 0; round < 3; round++) {
      while (live.length < 10) {
        const res = await create(member, { name: `full-${live.length}` });
        expect(res.status).toBe(201);
        live.push(((await res.json()) as { id: string }).id);
      }
      // Each delete frees the room one create needs: a create that finds the project full at that
      // moment is written again once there is room, or refused (413) when there is none.
      const doomed = live.splice(0);
      const [creates, deletes] = await Promise.all([
        Promise.all(Array.from({ length: 10 }, (_, i) => create(member, { name: `next-${round}-${i}` }))),
        Promise.all(doomed.map((id) => api(`/v2/images/${id}`, { method: "DELETE" }, member))),
      ]);
      expect(deletes.map((r) => r.status)).toEqual(deletes.map(() => 204));
      for (const r of creates) {
        seen.push(r.status);
        if (r.status === 201) live.push(((await r.json()) as { id: string }).id);
      }
      expect((await usage(member)).image_count_total).toBe(live.length);
      expect(live.length).toBeLessThanOrEqual(10);
    }
    expect(
      seen.filter((s) => s !== 201 && s !== 413),
      seen.join(" "),
    ).toEqual([]);
  });

  it("an undeclared upload that overflows is killed with QUOTA_EXCEEDED and its object deleted", async () => {
    const { project, member } = await freshProject();
    await setLimits(project, { image_stage_total: 1000 });
    const id = await createAndUpload(member, randomBytes(2000));
    const image = await waitForStatus(id, "killed", member);
    expect(image.failure).toMatchObject({ reason: "QUOTA_EXCEEDED" });
    const left = await s3Client().send(
      new ListObjectsV2Command({ Bucket: getStack().bucket, Prefix: `staging/${id}/` }),
    );
    expect(left.KeyCount ?? 0).toBe(0);
    expect(await usage(member)).toMatchObject({
      image_stage_total: 0,
      image_count_uploading: 0,
      image_count_total: 1,
    });
  });

  it("an import whose stored size does not fit image_size_total ends killed, and releases what it held", async () => {
    const { project, member } = await freshProject();
    await setLimits(project, { image_size_total: 1000 });
    const id = await createAndUpload(member, randomBytes(2000), { upload_size: 2000 });
    const image = await waitForStatus(id, "killed", member);
    expect(image.failure).toMatchObject({ reason: "QUOTA_EXCEEDED" });
    expect(String((image.failure as { message: string }).message)).toContain("image_size_total");
    const stored = await s3Client().send(
      new ListObjectsV2Command({ Bucket: getStack().bucket, Prefix: `images/${id}` }),
    );
    expect(stored.KeyCount ?? 0).toBe(0);
    expect(await usage(member)).toEqual({
      image_count_total: 1,
      image_size_total: 0,
      image_stage_total: 0,
      image_count_uploading: 0,
    });
  });

  it("after uploads, kills, deletes and duplicate events, usage equals a recount", async () => {
    const { member } = await freshProject();
    const a = randomBytes(3000);
    const idA = await createAndUpload(member, a, { upload_size: a.length });
    await waitForStatus(idA, "active", member);
    const idB = await createAndUpload(member, randomBytes(500), {
      upload_sha256: hex("sha256", randomBytes(4)),
    });
    await waitForStatus(idB, "killed", member);
    const idC = await createAndUpload(member, randomBytes(700));
    await waitForStatus(idC, "active", member);
    expect((await api(`/v2/images/${idC}`, { method: "DELETE" }, member)).status).toBe(204);
    const queued = await create(member, { name: "waiting", upload_size: 4096 });
    expect(queued.status).toBe(201);
    // A late second upload to A: a duplicate event for an image already imported.
    const showA = (await (await api(`/v2/images/${idA}`, {}, member)).json()) as { upload: unknown };
    expect(showA.upload).toBeNull();
    expect(await usage(member)).toEqual({
      image_count_total: 3,
      image_size_total: a.length,
      image_stage_total: 4096,
      image_count_uploading: 1,
    });
  });

  it("reconcile finds injected drift and repairs it; npm run reconcile reports it", async () => {
    const { project, member } = await freshProject();
    const id = await createAndUpload(member, randomBytes(1234));
    await waitForStatus(id, "active", member);
    const before = await usage(member);
    const storedBefore = before.image_size_total ?? 0;
    await dynamoDbClient().send(
      new UpdateItemCommand({
        TableName: getStack().table,
        Key: marshall({ pk: `PROJECT#${project}`, sk: "USAGE" }),
        UpdateExpression: "ADD image_size_total :d, image_count_total :c",
        ExpressionAttributeValues: marshall({ ":d": 99_999, ":c": 2 }),
      }),
    );
    expect((await usage(member)).image_size_total).toBe(storedBefore + 99_999);
    const { stdout } = await run("node", ["scripts/reconcile.mjs", "--dry-run"], {
      env: { ...process.env, HANGAR_URL: getStack().apiUrl, HANGAR_TOKEN: getStack().tokens.admin },
    });
    expect(stdout).toMatch(new RegExp(`${project}: drift .*image_size_total \\+99999`));
    expect((await usage(member)).image_size_total).toBe(storedBefore + 99_999);
    const res = await api("/v2/quotas/reconcile", { method: "POST" }, getStack().tokens.admin);
    expect(res.status).toBe(200);
    const report = (await res.json()) as {
      projects: { project: string; repaired: boolean; storage: { stored: number } }[];
    };
    const mine = report.projects.find((p) => p.project === project);
    expect(mine).toMatchObject({ repaired: true, storage: { stored: 1234 } });
    expect(await usage(member)).toEqual(before);
  });

  it("npm run reconcile reports staged objects and incomplete uploads that no live image owns", async () => {
    const { member } = await freshProject();
    const id = await createAndUpload(member, randomBytes(2048));
    await waitForStatus(id, "active", member);
    const bucket = getStack().bucket;
    const s3 = s3Client();
    // Left by a crashed import: multipart writes of the stored image and its spool.
    const writes: Record<string, string> = {};
    for (const key of [`images/${id}`, `spool/${id}`]) {
      const mp = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
      writes[key] = mp.UploadId as string;
    }
    // A staged object whose storage event never led anywhere (a key no image owns).
    const stray = `staging/${randomUUID()}/Stray`;
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: stray, Body: randomBytes(10) }));
    const { stdout } = await run("node", ["scripts/reconcile.mjs", "--dry-run"], {
      env: { ...process.env, HANGAR_URL: getStack().apiUrl, HANGAR_TOKEN: getStack().tokens.admin },
    });
    expect(stdout).toMatch(new RegExp(`objects no image owns: .*${stray}`));
    for (const [key, uploadId] of Object.entries(writes)) {
      expect(stdout).toContain(
        `incomplete upload no image owns: ${key} (upload ${uploadId}; image ${id} is active)`,
      );
    }
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: stray }));
    expect((await api(`/v2/images/${id}`, { method: "DELETE" }, member)).status).toBe(204);
  });

  it("an admin sees another project's staged bytes and every project's usage; a member cannot", async () => {
    const { project, member } = await freshProject();
    expect((await create(member, { name: "staged", upload_size: 777 })).status).toBe(201);
    expect(await usage(getStack().tokens.admin, project)).toMatchObject({ image_stage_total: 777 });
    const all = (await (await api("/v2/quotas", {}, getStack().tokens.admin)).json()) as {
      projects: UsageBody[];
    };
    expect(all.projects.find((p) => p.project_id === project)?.usage.image_stage_total?.usage).toBe(777);
    const other = await api(`/v2/info/usage?project_id=${project}`, {}, getStack().tokens.bob);
    expect(other.status).toBe(403);
    expect((await api("/v2/quotas", {}, getStack().tokens.bob)).status).toBe(403);
    expect(
      (await api(`/v2/quotas/${project}`, { method: "PUT", body: "{}" }, getStack().tokens.bob)).status,
    ).toBe(403);
  });
});
