import { randomUUID } from "node:crypto";
import { DeleteItemCommand, GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { marshall, unmarshall } from "@aws-sdk/util-dynamodb";
import { afterAll, describe, expect, it } from "vitest";
import { CorruptRecordError } from "../../functions/adapters/dynamodb/image-item.ts";
import { DynamoImageRepository } from "../../functions/adapters/dynamodb/image-repository.ts";
import type { ItemClient } from "../../functions/adapters/dynamodb/item-commands.ts";
import { DynamoQuotaStore } from "../../functions/adapters/dynamodb/quota-store.ts";
import {
  contentMd5ForDeletes,
  listMultipartUploads,
  S3ObjectStore,
} from "../../functions/adapters/s3/object-store.ts";
import { StaleStatusError } from "../../functions/core/errors.ts";
import { blankRecord } from "../../functions/core/image/create.ts";
import type { ImageRecord } from "../../functions/core/image/image.ts";
import type { ListedImage, ListSource } from "../../functions/core/ports.ts";
import { QuotaExceededError, UNLIMITED, ZERO } from "../../functions/core/quota.ts";
import { dynamoDbClient, getStack, itemClient, s3Client } from "./setup/stack.ts";

const dynamo = dynamoDbClient();
const items = itemClient();
const s3 = s3Client();
afterAll(() => {
  dynamo.destroy();
  s3.destroy();
});

function repository(): DynamoImageRepository {
  const { table } = getStack();
  return new DynamoImageRepository(items, table, new DynamoQuotaStore(items, table, UNLIMITED));
}

/** A fresh project per test, so listings see only the test's own images. */
const project = () => `repo-${randomUUID()}`;

function record(owner: string, createdAt: string, changes: Partial<ImageRecord> = {}): ImageRecord {
  return { ...blankRecord(randomUUID(), owner, createdAt), name: "repo", ...changes };
}

async function collect(source: AsyncIterable<ListedImage>): Promise<string[]> {
  const ids: string[] = [];
  for await (const l of source) ids.push(l.image.id);
  return ids;
}

async function rawItem(id: string): Promise<Record<string, unknown>> {
  const out = await dynamo.send(
    new GetItemCommand({
      TableName: getStack().table,
      Key: marshall({ pk: `IMAGE#${id}`, sk: "IMAGE" }),
      ConsistentRead: true,
    }),
  );
  return unmarshall(out.Item ?? {});
}

describe("DynamoImageRepository (DynamoDB Local)", () => {
  it("a lost conditional write carries the record it found, from the write itself", async () => {
    const images = repository();
    const image = record(project(), new Date().toISOString());
    await images.create(image);
    // A plain update (nothing held changes) and a transition with a quota transaction both lose.
    const lost = await images.transition(image.id, "finishImport", {}).catch((e: unknown) => e);
    expect(lost).toBeInstanceOf(StaleStatusError);
    expect((lost as StaleStatusError).current?.status).toBe("queued");
    await images.transition(image.id, "startImport", {});
    // Another writer changes the tags after our read: the guarded write is refused with the new record.
    await images.update(image.id, { tags: ["theirs"] }, ["importing"]);
    const guarded = await images
      .update(image.id, { tags: ["ours"] }, ["importing"], { unchanged: { tags: [] } })
      .catch((e: unknown) => e);
    expect(guarded).toBeInstanceOf(StaleStatusError);
    expect((guarded as StaleStatusError).current?.tags).toEqual(["theirs"]);
  });

  it("a write that loses a race after its read learns the winner's record from the refusal (ALL_OLD)", async () => {
    const { table } = getStack();
    // Between the repository's read and its write, another writer deactivates... here: imports the image.
    let gets = 0;
    let raced = false;
    const racing: ItemClient = {
      send: async (command) => {
        if (command.operation === "GetItem") gets++;
        if (command.operation === "UpdateItem" && !raced) {
          raced = true;
          await repository().update(image.id, { tags: ["winner"] }, ["queued"]);
        }
        return items.send(command);
      },
    };
    const quota = new DynamoQuotaStore(racing, table, UNLIMITED);
    const images = new DynamoImageRepository(racing, table, quota);
    const image = record(project(), new Date().toISOString());
    await images.create(image);
    gets = 0;
    const lost = await images
      .update(image.id, { tags: ["loser"] }, ["queued"], { unchanged: { tags: [] } })
      .catch((e: unknown) => e);
    expect(lost).toBeInstanceOf(StaleStatusError);
    expect((lost as StaleStatusError).current?.tags).toEqual(["winner"]);
    // One read before the write; the winner's record came back with the refusal, not from a second read.
    expect(gets).toBe(1);
  });

  it("index keys change in the same write as visibility and owner", async () => {
    const images = repository();
    const [alice, bob] = [project(), project()];
    const image = record(alice, new Date().toISOString());
    await images.create(image);
    expect((await rawItem(image.id)).gsi2pk).toBeUndefined();
    await images.update(image.id, { visibility: "community", owner: bob }, ["queued"]);
    const item = await rawItem(image.id);
    expect(item.gsi2pk).toBe("VIS#community");
    expect(item.gsi1pk).toBe(`OWNER#${bob}`);
    expect(await collect(images.list({ kind: "owner", owner: bob }, { order: "desc", pageSize: 5 }))).toEqual(
      [image.id],
    );
    await images.update(image.id, { visibility: "private" }, ["queued"]);
    expect((await rawItem(image.id)).gsi2pk).toBeUndefined();
  });

  it("lists a source in creation order from a position, a page of the store at a time", async () => {
    const images = repository();
    const owner = project();
    const base = Date.parse("2026-01-01T00:00:00.000Z");
    const created: ImageRecord[] = [];
    for (let i = 0; i < 7; i++) {
      const image = record(owner, new Date(base + i * 1000).toISOString());
      created.push(image);
      await images.create(image);
    }
    const source: ListSource = { kind: "owner", owner };
    const newestFirst = created.map((i) => i.id).reverse();
    expect(await collect(images.list(source, { order: "desc", pageSize: 2 }))).toEqual(newestFirst);
    const after = `${created[4]?.created_at}#${created[4]?.id}`;
    expect(await collect(images.list(source, { order: "desc", after, pageSize: 2 }))).toEqual(
      newestFirst.slice(3),
    );
    expect(await collect(images.list(source, { order: "asc", after, pageSize: 3 }))).toEqual(
      created.slice(5).map((i) => i.id),
    );
  });

  it("a change larger than a limit by itself is refused before any write, with the numbers", async () => {
    const { table } = getStack();
    const quota = new DynamoQuotaStore(items, table, { ...UNLIMITED, image_stage_total: 1000 });
    const images = new DynamoImageRepository(items, table, quota);
    const owner = project();
    const image = record(owner, new Date().toISOString(), { upload_size: 5000 });
    const refused = await images.create(image).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(QuotaExceededError);
    expect((refused as QuotaExceededError).message).toContain("5000");
    expect(await images.get(image.id)).toBeUndefined();
    expect(await quota.usage(owner)).toEqual(ZERO);
  });

  it("refuses to read an item that is not a valid image record", async () => {
    const id = randomUUID();
    await dynamo.send(
      new PutItemCommand({
        TableName: getStack().table,
        Item: marshall({ pk: `IMAGE#${id}`, sk: "IMAGE", id, status: "flying", owner: "x" }),
      }),
    );
    try {
      await expect(repository().get(id)).rejects.toBeInstanceOf(CorruptRecordError);
    } finally {
      // Sweeps and reconciliation in the same run read every image item.
      await dynamo.send(
        new DeleteItemCommand({
          TableName: getStack().table,
          Key: marshall({ pk: `IMAGE#${id}`, sk: "IMAGE" }),
        }),
      );
    }
  });
});

describe("S3ObjectStore listings (MinIO)", () => {
  it("deletePrefix deletes every object and aborts every upload, however many listing pages they take", async () => {
    const { bucket, s3Endpoint, region } = getStack();
    const store = new S3ObjectStore(
      { bucket, endpoint: s3Endpoint, region, partSize: 5 * 1024 * 1024 },
      contentMd5ForDeletes(s3Client()),
    );
    const prefix = `spool/${randomUUID()}`;
    for (let i = 0; i < 3; i++) {
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/o${i}`, Body: "x" }));
    }
    // MinIO lists uploads only for a whole key: three at the prefix itself, listed one per page.
    const uploads: string[] = [];
    for (let i = 0; i < 3; i++) {
      const out = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: prefix }));
      uploads.push(out.UploadId ?? "");
    }
    try {
      expect((await listMultipartUploads(s3, bucket, prefix, 1)).map((u) => u.uploadId).sort()).toEqual(
        [...uploads].sort(),
      );
      await store.deletePrefix(prefix, 1);
      expect(await listMultipartUploads(s3, bucket, prefix)).toEqual([]);
      const left: string[] = [];
      for await (const o of store.list(prefix)) left.push(o.key);
      expect(left).toEqual([]);
    } finally {
      for (const id of uploads) {
        await s3
          .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: prefix, UploadId: id }))
          .catch(() => undefined);
      }
    }
  });
});
