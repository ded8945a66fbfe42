import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { marshall, unmarshall } from "@aws-sdk/util-dynamodb";
import { ConflictError, ImageNotFoundError, StaleStatusError } from "../../core/errors.ts";
import type { ImageRecord, ImageStatus } from "../../core/image/image.ts";
import { TRANSITIONS, type TransitionName } from "../../core/image/transitions.ts";
import type { ImageRepository } from "../../core/ports.ts";

const imagePk = (id: string) => `IMAGE#${id}`;
const IMAGE_SK = "IMAGE";
const KEY_ATTRIBUTES = new Set(["pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"]);

/** Index keys that follow from the record's fields; rewritten whenever those fields change. */
function indexKeys(image: Pick<ImageRecord, "id" | "owner" | "visibility" | "created_at">) {
  const order = `${image.created_at}#${image.id}`;
  return {
    gsi1pk: `OWNER#${image.owner}`,
    gsi1sk: order,
    ...(image.visibility === "public" || image.visibility === "community"
      ? { gsi2pk: `VIS#${image.visibility}`, gsi2sk: order }
      : {}),
  };
}

function toRecord(item: Record<string, unknown>): ImageRecord {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(item)) if (!KEY_ATTRIBUTES.has(k)) out[k] = v;
  return out as unknown as ImageRecord;
}

interface UpdateParts {
  expression: string;
  names: Record<string, string>;
  values: Record<string, unknown>;
}

/** Builds `SET a = :a, ... REMOVE b` from a change set; `undefined` fields are left alone. */
function updateParts(changes: Record<string, unknown>): UpdateParts {
  const set: string[] = [];
  const names: Record<string, string> = {};
  const values: Record<string, unknown> = {};
  let i = 0;
  for (const [field, value] of Object.entries(changes)) {
    if (value === undefined) continue;
    const n = `#f${i}`;
    const v = `:v${i}`;
    i++;
    names[n] = field;
    values[v] = value;
    set.push(`${n} = ${v}`);
  }
  return { expression: set.length ? `SET ${set.join(", ")}` : "", names, values };
}

/** DynamoDB adapter: one item per image, every status change a conditional write. */
export class DynamoImageRepository implements ImageRepository {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly table: string,
  ) {}

  async create(image: ImageRecord): Promise<void> {
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.table,
          Item: marshall(
            { pk: imagePk(image.id), sk: IMAGE_SK, ...indexKeys(image), ...image },
            { removeUndefinedValues: true },
          ),
          ConditionExpression: "attribute_not_exists(pk)",
        }),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) {
        throw new ConflictError(`An image with ID ${image.id} already exists.`, "DUPLICATE_ID", {
          cause: err,
        });
      }
      throw err;
    }
  }

  async get(id: string): Promise<ImageRecord | undefined> {
    const out = await this.client.send(
      new GetItemCommand({
        TableName: this.table,
        Key: marshall({ pk: imagePk(id), sk: IMAGE_SK }),
        ConsistentRead: true,
      }),
    );
    return out.Item ? toRecord(unmarshall(out.Item)) : undefined;
  }

  private async queryIndex(index: "gsi1" | "gsi2", key: string): Promise<ImageRecord[]> {
    const items: ImageRecord[] = [];
    let start: Record<string, import("@aws-sdk/client-dynamodb").AttributeValue> | undefined;
    do {
      const out = await this.client.send(
        new QueryCommand({
          TableName: this.table,
          IndexName: index,
          KeyConditionExpression: "#pk = :pk",
          ExpressionAttributeNames: { "#pk": `${index}pk` },
          ExpressionAttributeValues: marshall({ ":pk": key }),
          ScanIndexForward: false,
          ExclusiveStartKey: start,
        }),
      );
      for (const item of out.Items ?? []) items.push(toRecord(unmarshall(item)));
      start = out.LastEvaluatedKey;
    } while (start);
    return items;
  }

  listByOwner(owner: string): Promise<ImageRecord[]> {
    return this.queryIndex("gsi1", `OWNER#${owner}`);
  }

  listByVisibility(visibility: "public" | "community"): Promise<ImageRecord[]> {
    return this.queryIndex("gsi2", `VIS#${visibility}`);
  }

  /** A full table scan, filtered to image items: only admins list every image, and they are few. */
  async listAll(): Promise<ImageRecord[]> {
    const items: ImageRecord[] = [];
    let start: Record<string, import("@aws-sdk/client-dynamodb").AttributeValue> | undefined;
    do {
      const out = await this.client.send(
        new ScanCommand({
          TableName: this.table,
          FilterExpression: "sk = :sk",
          ExpressionAttributeValues: marshall({ ":sk": IMAGE_SK }),
          ConsistentRead: true,
          ExclusiveStartKey: start,
        }),
      );
      for (const item of out.Items ?? []) items.push(toRecord(unmarshall(item)));
      start = out.LastEvaluatedKey;
    } while (start);
    return items;
  }

  async transition(
    id: string,
    name: TransitionName,
    changes: Partial<ImageRecord>,
    options: { allowExpiredLeaseFrom?: ImageStatus; now?: string } = {},
  ): Promise<ImageRecord> {
    const edge = TRANSITIONS[name];
    const parts = updateParts({ ...changes, status: edge.to });
    const from = edge.from.map((_, i) => `:from${i}`);
    const values: Record<string, unknown> = { ...parts.values };
    edge.from.forEach((s, i) => {
      values[`:from${i}`] = s;
    });
    let condition = `attribute_exists(pk) AND #status IN (${from.join(", ")})`;
    if (options.allowExpiredLeaseFrom && options.now) {
      condition = `attribute_exists(pk) AND (#status IN (${from.join(", ")}) OR (#status = :leaseFrom AND #lease < :now))`;
      values[":leaseFrom"] = options.allowExpiredLeaseFrom;
      values[":now"] = options.now;
    }
    return this.conditionalUpdate(id, parts, condition, values, edge.from);
  }

  async update(
    id: string,
    changes: Partial<ImageRecord>,
    whileIn: readonly ImageStatus[],
  ): Promise<ImageRecord> {
    const merged: Record<string, unknown> = { ...changes };
    const parts = updateParts(merged);
    const values: Record<string, unknown> = { ...parts.values };
    whileIn.forEach((s, i) => {
      values[`:in${i}`] = s;
    });
    const condition = `attribute_exists(pk) AND #status IN (${whileIn.map((_, i) => `:in${i}`).join(", ")})`;
    const updated = await this.conditionalUpdate(id, parts, condition, values, whileIn);
    if (changes.visibility !== undefined || changes.owner !== undefined) await this.reindex(updated);
    return updated;
  }

  /** Rewrites the owner and visibility index keys after an owner or visibility change. */
  private async reindex(image: ImageRecord): Promise<void> {
    const keys = indexKeys(image);
    const hasVis = "gsi2pk" in keys;
    const values: Record<string, unknown> = { ":o": keys.gsi1pk, ":os": keys.gsi1sk };
    if (hasVis) Object.assign(values, { ":p": keys.gsi2pk, ":s": keys.gsi2sk });
    await this.client.send(
      new UpdateItemCommand({
        TableName: this.table,
        Key: marshall({ pk: imagePk(image.id), sk: IMAGE_SK }),
        UpdateExpression: hasVis
          ? "SET gsi1pk = :o, gsi1sk = :os, gsi2pk = :p, gsi2sk = :s"
          : "SET gsi1pk = :o, gsi1sk = :os REMOVE gsi2pk, gsi2sk",
        ExpressionAttributeValues: marshall(values),
        ConditionExpression: "attribute_exists(pk)",
      }),
    );
  }

  private async conditionalUpdate(
    id: string,
    parts: UpdateParts,
    condition: string,
    values: Record<string, unknown>,
    expected: readonly string[],
  ): Promise<ImageRecord> {
    try {
      const out = await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall({ pk: imagePk(id), sk: IMAGE_SK }),
          UpdateExpression: parts.expression,
          ConditionExpression: condition,
          ExpressionAttributeNames: {
            ...parts.names,
            "#status": "status",
            ...(condition.includes("#lease") ? { "#lease": "import_lease_until" } : {}),
          },
          ExpressionAttributeValues: marshall(values, { removeUndefinedValues: true }),
          ReturnValues: "ALL_NEW",
        }),
      );
      if (!out.Attributes) throw new ImageNotFoundError(id);
      return toRecord(unmarshall(out.Attributes));
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException)
        throw new StaleStatusError(id, expected, { cause: err });
      throw err;
    }
  }

  async purge(id: string): Promise<void> {
    await this.client.send(
      new DeleteItemCommand({
        TableName: this.table,
        Key: marshall({ pk: imagePk(id), sk: IMAGE_SK }),
        ConditionExpression: "#status = :deleted",
        ExpressionAttributeNames: { "#status": "status" },
        ExpressionAttributeValues: marshall({ ":deleted": "deleted" }),
      }),
    );
  }
}
