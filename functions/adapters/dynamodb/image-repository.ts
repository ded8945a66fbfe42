import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  TransactionCanceledException,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { marshall, unmarshall } from "@aws-sdk/util-dynamodb";
import { ConflictError, ImageNotFoundError, StaleStatusError } from "../../core/errors.ts";
import type { ImageRecord, ImageStatus } from "../../core/image/image.ts";
import { TRANSITIONS, type TransitionName } from "../../core/image/transitions.ts";
import type { ImageRepository } from "../../core/ports.ts";
import {
  type Counters,
  difference,
  heldBy,
  isZero,
  overLimit,
  QUOTA_KEYS,
  QuotaExceededError,
  type QuotaStore,
} from "../../core/quota.ts";
import { projectPk, USAGE_SK } from "./quota-store.ts";

const imagePk = (id: string) => `IMAGE#${id}`;
const IMAGE_SK = "IMAGE";
const KEY_ATTRIBUTES = new Set([
  "pk",
  "sk",
  "gsi1pk",
  "gsi1sk",
  "gsi2pk",
  "gsi2sk",
  ...QUOTA_KEYS.map((k) => `held_${k}`),
]);

/** What an image holds is stored beside it, so a write can be conditioned on it. */
function heldAttributes(held: Counters): Record<string, number> {
  return Object.fromEntries(QUOTA_KEYS.map((k) => [`held_${k}`, held[k]]));
}

/** What the stored item holds; items written before quotas existed hold what their record implies. */
function heldOf(raw: Record<string, unknown>, record: ImageRecord): Counters {
  const computed = heldBy(record);
  const out = { ...computed };
  for (const k of QUOTA_KEYS) {
    const v = raw[`held_${k}`];
    if (typeof v === "number") out[k] = v;
  }
  return out;
}

/** Which items of a cancelled transaction failed their condition: [first, second]. */
function cancelled(err: unknown): [boolean, boolean] {
  if (!(err instanceof TransactionCanceledException)) return [false, false];
  const reasons = err.CancellationReasons ?? [];
  const failed = (i: number) => reasons[i]?.Code === "ConditionalCheckFailed";
  return [failed(0), failed(1)];
}

/** Another transaction on the same usage item was in flight: the whole write may simply be retried. */
function conflicted(err: unknown): boolean {
  return (
    err instanceof TransactionCanceledException &&
    (err.CancellationReasons ?? []).some((r) => r.Code === "TransactionConflict")
  );
}

const MAX_CONFLICT_RETRIES = 8;
const backoff = (attempt: number) =>
  new Promise((r) => setTimeout(r, Math.random() * Math.min(1000, 20 * 2 ** attempt)));

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

/** JSON with map keys sorted: equal for values DynamoDB compares as equal (lists in order, maps by key). */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_, v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

/** Options of `transition` (see ImageRepository). */
type TransitionOptions = NonNullable<Parameters<ImageRepository["transition"]>[3]>;

/** One conditional write of an image: the change, its condition, and the same condition as a predicate. */
interface WriteSpec {
  changes: Partial<ImageRecord>;
  parts: UpdateParts;
  condition: string;
  values: Record<string, unknown>;
  /** Attribute names the condition uses beyond `#status` and those of `parts`. */
  names: Record<string, string>;
  /** Statuses the write expects, named in the StaleStatusError when it loses. */
  expected: readonly string[];
  /** The condition, checked against a fresh read before writing. */
  holds: (current: ImageRecord) => boolean;
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
  /**
   * With `quota`, every write that changes what an image holds (see `heldBy`) also changes its project's
   * usage by the difference, in one transaction whose conditions keep usage within the limits.
   */
  constructor(
    private readonly client: DynamoDBClient,
    private readonly table: string,
    private readonly quota?: QuotaStore,
  ) {}

  async create(image: ImageRecord): Promise<void> {
    const held = heldBy(image);
    const put = {
      TableName: this.table,
      Item: marshall(
        { pk: imagePk(image.id), sk: IMAGE_SK, ...indexKeys(image), ...image, ...heldAttributes(held) },
        { removeUndefinedValues: true },
      ),
      ConditionExpression: "attribute_not_exists(pk)",
    };
    const duplicate = (err: unknown) =>
      new ConflictError(`An image with ID ${image.id} already exists.`, "DUPLICATE_ID", { cause: err });
    if (!this.quota || isZero(held)) {
      try {
        await this.client.send(new PutItemCommand(put));
      } catch (err) {
        if (err instanceof ConditionalCheckFailedException) throw duplicate(err);
        throw err;
      }
      return;
    }
    for (let attempt = 0; ; attempt++) {
      // Limits read afresh on every attempt: an admin may have changed them meanwhile.
      const usage = await this.usageUpdate(image.owner, held);
      try {
        await this.client.send(
          new TransactWriteItemsCommand({ TransactItems: [{ Put: put }, { Update: usage }] }),
        );
        return;
      } catch (err) {
        const [imageFailed, usageFailed] = cancelled(err);
        if (imageFailed) throw duplicate(err);
        if (usageFailed) {
          const refusal = await this.exceeded(image.owner, held, err);
          // Refused at a moment the project was full, but deletes have freed room since: write again.
          if (refusal instanceof QuotaExceededError || attempt >= MAX_CONFLICT_RETRIES) throw refusal;
          await backoff(attempt);
          continue;
        }
        if (conflicted(err) && attempt < MAX_CONFLICT_RETRIES) {
          await backoff(attempt);
          continue;
        }
        throw err;
      }
    }
  }

  /** The usage item update adding `delta`, conditioned so no positive change passes a limit. */
  private async usageUpdate(project: string, delta: Counters) {
    const limits = await (this.quota as QuotaStore).limits(project);
    const names: Record<string, string> = {};
    const values: Record<string, unknown> = {};
    const add: string[] = [];
    const cond: string[] = [];
    QUOTA_KEYS.forEach((k, i) => {
      if (delta[k] === 0) return;
      names[`#q${i}`] = k;
      values[`:d${i}`] = delta[k];
      add.push(`#q${i} :d${i}`);
      if (delta[k] > 0 && limits[k] >= 0) {
        const room = limits[k] - delta[k];
        if (room < 0) cond.push("attribute_not_exists(pk) AND attribute_exists(pk)");
        else {
          values[`:m${i}`] = room;
          cond.push(`(attribute_not_exists(#q${i}) OR #q${i} <= :m${i})`);
        }
      }
    });
    return {
      TableName: this.table,
      Key: marshall({ pk: projectPk(project), sk: USAGE_SK }),
      UpdateExpression: `ADD ${add.join(", ")}`,
      ...(cond.length ? { ConditionExpression: cond.join(" AND ") } : {}),
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: marshall(values),
    };
  }

  /** Names the counter that overflowed, with the numbers, from a fresh read. */
  private async exceeded(project: string, delta: Counters, cause: unknown): Promise<Error> {
    const quota = this.quota as QuotaStore;
    const [usage, limits] = await Promise.all([quota.usage(project), quota.limits(project)]);
    const key = overLimit(usage, delta, limits);
    if (!key)
      return new ConflictError("Usage changed concurrently; try again.", "CONCURRENT_UPDATE", { cause });
    return new QuotaExceededError(project, key, limits[key], usage[key], delta[key]);
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
    options: TransitionOptions = {},
  ): Promise<ImageRecord> {
    const edge = TRANSITIONS[name];
    const parts = updateParts({ ...changes, status: edge.to });
    const from = edge.from.map((_, i) => `:from${i}`);
    const values: Record<string, unknown> = { ...parts.values };
    edge.from.forEach((s, i) => {
      values[`:from${i}`] = s;
    });
    const names: Record<string, string> = {};
    const { allowExpiredLeaseFrom: leaseFrom, now } = options;
    let condition = `attribute_exists(pk) AND #status IN (${from.join(", ")})`;
    if (leaseFrom && now) {
      condition = `attribute_exists(pk) AND (#status IN (${from.join(", ")}) OR (#status = :leaseFrom AND #lease < :now))`;
      values[":leaseFrom"] = leaseFrom;
      values[":now"] = now;
      names["#lease"] = "import_lease_until";
    }
    if (options.leaseIs !== undefined) {
      condition = `${condition} AND #lease = :leaseIs`;
      values[":leaseIs"] = options.leaseIs;
      names["#lease"] = "import_lease_until";
    }
    if (options.unlessProtected) {
      // Part of the same conditional write, so a protection set after our read still stops it.
      condition += " AND (attribute_not_exists(#protected) OR #protected = :unprotected)";
      values[":unprotected"] = false;
      names["#protected"] = "protected";
    }
    const holds = (current: ImageRecord) =>
      ((edge.from as readonly string[]).includes(current.status) ||
        (leaseFrom !== undefined &&
          now !== undefined &&
          current.status === leaseFrom &&
          current.import_lease_until != null &&
          current.import_lease_until < now)) &&
      (options.leaseIs === undefined || current.import_lease_until === options.leaseIs) &&
      !(options.unlessProtected && current.protected);
    return this.write(id, {
      changes: { ...changes, status: edge.to },
      parts,
      condition,
      values,
      names,
      expected: edge.from,
      holds,
    });
  }

  async update(
    id: string,
    changes: Partial<ImageRecord>,
    whileIn: readonly ImageStatus[],
    options: { unchanged?: Partial<ImageRecord> } = {},
  ): Promise<ImageRecord> {
    const merged: Record<string, unknown> = { ...changes };
    const parts = updateParts(merged);
    const values: Record<string, unknown> = { ...parts.values };
    whileIn.forEach((s, i) => {
      values[`:in${i}`] = s;
    });
    const conditions = [
      `attribute_exists(pk) AND #status IN (${whileIn.map((_, i) => `:in${i}`).join(", ")})`,
    ];
    // Fields read, changed and written back whole (tags, properties): the write holds only if nobody
    // changed them in between. DynamoDB compares lists and maps by value.
    const guardNames: Record<string, string> = {};
    Object.entries(options.unchanged ?? {}).forEach(([field, value], i) => {
      guardNames[`#u${i}`] = field;
      values[`:u${i}`] = value;
      conditions.push(`#u${i} = :u${i}`);
    });
    const updated = await this.write(id, {
      changes,
      parts,
      condition: conditions.join(" AND "),
      values,
      names: guardNames,
      expected: whileIn,
      holds: (current) =>
        whileIn.includes(current.status) &&
        Object.entries(options.unchanged ?? {}).every(
          ([field, value]) => canonical(current[field as keyof ImageRecord]) === canonical(value),
        ),
    });
    if (changes.visibility !== undefined || changes.owner !== undefined) await this.reindex(updated);
    return updated;
  }

  /**
   * Rewrites the owner and visibility index keys after an owner or visibility change. Conditioned on
   * the record still having that owner and visibility: when two changes race, the index follows the
   * one that landed last, whichever reindex runs last.
   */
  private async reindex(image: ImageRecord): Promise<void> {
    const keys = indexKeys(image);
    const hasVis = "gsi2pk" in keys;
    const values: Record<string, unknown> = {
      ":o": keys.gsi1pk,
      ":os": keys.gsi1sk,
      ":owner": image.owner,
      ":vis": image.visibility,
    };
    if (hasVis) Object.assign(values, { ":p": keys.gsi2pk, ":s": keys.gsi2sk });
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall({ pk: imagePk(image.id), sk: IMAGE_SK }),
          UpdateExpression: hasVis
            ? "SET gsi1pk = :o, gsi1sk = :os, gsi2pk = :p, gsi2sk = :s"
            : "SET gsi1pk = :o, gsi1sk = :os REMOVE gsi2pk, gsi2sk",
          ExpressionAttributeNames: { "#owner": "owner", "#vis": "visibility" },
          ExpressionAttributeValues: marshall(values),
          ConditionExpression: "attribute_exists(pk) AND #owner = :owner AND #vis = :vis",
        }),
      );
    } catch (err) {
      // A later change of owner or visibility landed: its own reindex writes the keys.
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
    }
  }

  /**
   * A conditional update that keeps quota usage exact: reads the record, and when the change alters what
   * the image holds, writes the image (also conditioned on what it held) and the usage delta in one
   * transaction. A concurrent change of what the image holds is retried; a lost condition is a
   * StaleStatusError.
   */
  private async write(id: string, spec: WriteSpec): Promise<ImageRecord> {
    const { changes, parts, condition, values, expected } = spec;
    if (!this.quota) {
      const named = { ...parts, names: { ...parts.names, ...spec.names } };
      return this.conditionalUpdate(id, named, condition, values, expected);
    }
    for (let attempt = 0; ; attempt++) {
      const raw = await this.rawItem(id);
      if (!raw) throw new StaleStatusError(id, expected);
      const current = toRecord(raw);
      // What the condition would refuse is refused without a write (and without retries).
      if (!spec.holds(current)) throw new StaleStatusError(id, expected, { current });
      const next = { ...current, ...changes } as ImageRecord;
      const before = heldOf(raw, current);
      const after = heldBy(next);
      const delta = difference(before, after);
      const heldParts = updateParts({ ...changes, ...heldAttributes(after) });
      Object.assign(heldParts.names, spec.names);
      const heldValues: Record<string, unknown> = { ...values, ...heldParts.values };
      const heldCondition = [
        condition,
        ...QUOTA_KEYS.map((k, i) => {
          heldValues[`:h${i}`] = before[k];
          heldParts.names[`#h${i}`] = `held_${k}`;
          return `(#h${i} = :h${i} OR attribute_not_exists(#h${i}))`;
        }),
      ].join(" AND ");
      if (isZero(delta)) {
        return this.conditionalUpdate(id, heldParts, heldCondition, heldValues, expected);
      }
      const usage = await this.usageUpdate(next.owner, delta);
      try {
        await this.client.send(
          new TransactWriteItemsCommand({
            TransactItems: [
              {
                Update: {
                  TableName: this.table,
                  Key: marshall({ pk: imagePk(id), sk: IMAGE_SK }),
                  UpdateExpression: heldParts.expression,
                  ConditionExpression: heldCondition,
                  ExpressionAttributeNames: { ...heldParts.names, "#status": "status" },
                  ExpressionAttributeValues: marshall(heldValues, { removeUndefinedValues: true }),
                },
              },
              { Update: usage },
            ],
          }),
        );
        return next;
      } catch (err) {
        const [imageFailed, usageFailed] = cancelled(err);
        if (usageFailed && !imageFailed) {
          const refusal = await this.exceeded(next.owner, delta, err);
          // The limit held a moment ago but not now (others' writes freed room): write again.
          if (refusal instanceof QuotaExceededError || attempt >= MAX_CONFLICT_RETRIES) throw refusal;
          await backoff(attempt);
          continue;
        }
        if ((imageFailed || conflicted(err)) && attempt < MAX_CONFLICT_RETRIES) {
          await backoff(attempt);
          continue;
        }
        if (imageFailed)
          throw new StaleStatusError(id, expected, { cause: err, current: await this.get(id) });
        throw err;
      }
    }
  }

  private async rawItem(id: string): Promise<Record<string, unknown> | undefined> {
    const out = await this.client.send(
      new GetItemCommand({
        TableName: this.table,
        Key: marshall({ pk: imagePk(id), sk: IMAGE_SK }),
        ConsistentRead: true,
      }),
    );
    return out.Item ? unmarshall(out.Item) : undefined;
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
          ExpressionAttributeNames: { ...parts.names, "#status": "status" },
          ExpressionAttributeValues: marshall(values, { removeUndefinedValues: true }),
          ReturnValues: "ALL_NEW",
          ReturnValuesOnConditionCheckFailure: "ALL_OLD",
        }),
      );
      if (!out.Attributes) throw new ImageNotFoundError(id);
      return toRecord(unmarshall(out.Attributes));
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) {
        const current = err.Item ? toRecord(unmarshall(err.Item)) : undefined;
        throw new StaleStatusError(id, expected, { cause: err, current });
      }
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
