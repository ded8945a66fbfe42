import { randomBytes, randomUUID } from "node:crypto";
import { QueryCommand } from "@aws-sdk/client-dynamodb";
import {
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  UploadPartCommand,
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

const MIB = 1024 * 1024;

/** A project of its own for each test, so its usage starts at zero. */
async function freshProject() {
  const project = `del-${randomUUID().slice(0, 8)}`;
  const member = await mintToken({ sub: `${project}-user`, project_id: project, roles: ["member"] });
  return { project, member };
}

async function usage(token: string): Promise<Record<string, number>> {
  const res = await api("/v2/info/usage", {}, token);
  expect(res.status, await res.clone().text()).toBe(200);
  const body = (await res.json()) as { usage: Record<string, { usage: number }> };
  return Object.fromEntries(Object.entries(body.usage).map(([k, v]) => [k, v.usage]));
}

const create = (token: string, body: Record<string, unknown>) =>
  api("/v2/images", { method: "POST", body: JSON.stringify(body) }, token);

/** Keys of the objects under a prefix. */
async function objectsUnder(prefix: string): Promise<string[]> {
  const out = await s3Client().send(new ListObjectsV2Command({ Bucket: getStack().bucket, Prefix: prefix }));
  return (out.Contents ?? []).flatMap((o) => (o.Key ? [o.Key] : []));
}

/** Multipart uploads in progress at exactly `key` (MinIO lists uploads only for a whole key). */
async function uploadsAt(key: string): Promise<string[]> {
  const out = await s3Client().send(
    new ListMultipartUploadsCommand({ Bucket: getStack().bucket, Prefix: key }),
  );
  return (out.Uploads ?? []).flatMap((u) => (u.Key === key && u.UploadId ? [u.UploadId] : []));
}

/** Nothing of the image is left: no record, no objects, no multipart uploads of its keys. */
async function expectGone(id: string, token: string): Promise<void> {
  expect((await api(`/v2/images/${id}`, {}, token)).status).toBe(404);
  expect(await objectsUnder(`staging/${id}/`)).toEqual([]);
  expect(await objectsUnder(`images/${id}`)).toEqual([]);
  expect(await objectsUnder(`spool/${id}`)).toEqual([]);
  expect(await uploadsAt(`staging/${id}/upload`)).toEqual([]);
  expect(await uploadsAt(`images/${id}`)).toEqual([]);
  expect(await uploadsAt(`spool/${id}`)).toEqual([]);
}

/** What an importer that died mid-write leaves behind: a multipart upload with a part at each output key. */
async function leaveCrashedWrites(id: string): Promise<void> {
  const s3 = s3Client();
  for (const key of [`images/${id}`, `spool/${id}`]) {
    const mp = await s3.send(new CreateMultipartUploadCommand({ Bucket: getStack().bucket, Key: key }));
    await s3.send(
      new UploadPartCommand({
        Bucket: getStack().bucket,
        Key: key,
        UploadId: mp.UploadId,
        PartNumber: 1,
        Body: randomBytes(5 * MIB),
      }),
    );
    expect(await uploadsAt(key)).toHaveLength(1);
  }
}

const ZERO_USAGE = {
  image_count_total: 0,
  image_size_total: 0,
  image_stage_total: 0,
  image_count_uploading: 0,
};

describe("delete", () => {
  it("deletes an image within moments of its upload, 5 of 5, leaving nothing behind", async () => {
    const { member } = await freshProject();
    for (let i = 0; i < 5; i++) {
      const bytes = randomBytes(256 * 1024);
      const { id } = await uploadThroughLink(
        await create(member, { name: `quick-${i}`, upload_size: bytes.length }),
        bytes,
      );
      const res = await api(`/v2/images/${id}`, { method: "DELETE" }, member);
      expect(res.status, await res.text()).toBe(204);
      await expectGone(id, member);
    }
    // A late storage event for a deleted image changes nothing; wait out the importer before counting.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await usage(member)).toEqual(ZERO_USAGE);
  });

  it("deletes an image while it imports: the import is cancelled and cleans up after itself", async () => {
    const { member } = await freshProject();
    const bytes = randomBytes(128 * MIB);
    const { id } = await uploadThroughLink(await create(member, { name: "big" }), bytes);
    const share = await api(
      `/v2/images/${id}/members`,
      { method: "POST", body: JSON.stringify({ member: "another-project" }) },
      member,
    );
    expect(share.status, await share.text()).toBe(200);
    const seen = await waitForStatus(id, ["importing", "active"], member, 60_000);
    expect(seen.status, "the import finished before the delete: use a bigger upload").toBe("importing");
    const res = await api(`/v2/images/${id}`, { method: "DELETE" }, member);
    expect(res.status, await res.text()).toBe(204);
    expect((await api(`/v2/images/${id}`, {}, member)).status).toBe(404);
    // The importer notices at its next conditional write and removes what it wrote.
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        await expectGone(id, member);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    expect(await usage(member)).toEqual(ZERO_USAGE);
    // The record and its members are gone from the table, not only hidden.
    const items = await dynamoDbClient().send(
      new QueryCommand({
        TableName: getStack().table,
        KeyConditionExpression: "pk = :pk",
        ExpressionAttributeValues: marshall({ ":pk": `IMAGE#${id}` }),
        ConsistentRead: true,
      }),
    );
    expect(items.Count).toBe(0);
  });

  it("aborts leftover multipart uploads of the image's stored and spool keys on delete", async () => {
    const { member } = await freshProject();
    const res = await create(member, { name: "crashed import" });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    await leaveCrashedWrites(id);
    expect((await api(`/v2/images/${id}`, { method: "DELETE" }, member)).status).toBe(204);
    await expectGone(id, member);
  });

  it("a protected image is never deleted: admin PATCH protected=true races the owner's DELETE, 30 rounds", async () => {
    const { member } = await freshProject();
    const admin = getStack().tokens.admin;
    const outcomes = { deletedFirst: 0, protectedFirst: 0 };
    for (let round = 0; round < 30; round++) {
      const res = await create(member, { name: `race-${round}` });
      expect(res.status).toBe(201);
      const { id } = (await res.json()) as { id: string };
      const [patch, del] = await Promise.all([
        api(
          `/v2/images/${id}`,
          {
            method: "PATCH",
            headers: { "content-type": "application/openstack-images-v2.1-json-patch" },
            body: JSON.stringify([{ op: "replace", path: "/protected", value: true }]),
          },
          admin,
        ),
        api(`/v2/images/${id}`, { method: "DELETE" }, member),
      ]);
      const after = await api(`/v2/images/${id}`, {}, admin);
      if (del.status === 204) {
        outcomes.deletedFirst++;
        expect(after.status, `round ${round}: deleted, yet the image is still there`).toBe(404);
        expect([404, 409], `round ${round}: PATCH ${patch.status} after the delete`).toContain(patch.status);
      } else {
        outcomes.protectedFirst++;
        const body = await del.text();
        expect(del.status, `round ${round}: ${body}`).toBe(403);
        expect(JSON.parse(body)).toMatchObject({ error: { code: 403, reason: "PROTECTED" } });
        expect(patch.status).toBe(200);
        expect(after.status).toBe(200);
        expect(((await after.json()) as { protected: boolean }).protected).toBe(true);
      }
    }
    expect(outcomes.deletedFirst + outcomes.protectedFirst).toBe(30);
  });

  it("an import aborts the multipart writes a crashed earlier attempt left at the image's keys", async () => {
    const { member } = await freshProject();
    const bytes = randomBytes(64 * 1024);
    const res = await create(member, { name: "retried import", upload_size: bytes.length });
    expect(res.status).toBe(201);
    const { id } = (await res.clone().json()) as { id: string };
    await leaveCrashedWrites(id);
    await uploadThroughLink(res, bytes);
    await waitForStatus(id, "active", member);
    expect(await uploadsAt(`images/${id}`)).toEqual([]);
    expect(await uploadsAt(`spool/${id}`)).toEqual([]);
  });
});
