import type { Update } from "@aws-sdk/client-dynamodb";
import { marshall, unmarshall } from "@aws-sdk/util-dynamodb";
import { ConflictError, StaleStatusError } from "../../core/errors.ts";
import type { ImageRecord, ImageStatus } from "../../core/image/image.ts";
import { TRANSITIONS, type TransitionName } from "../../core/image/transitions.ts";
import type { ImageRepository, ListedImage, ListOptions, ListSource } from "../../core/ports.ts";
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
import {
  allOf,
  anyOf,
  type Condition,
  equals,
  exists,
  isIn,
  lessThan,
  Placeholders,
  updateExpression,
} from "./expressions.ts";
import {
  ALL_IMAGES,
  heldAttribute,
  heldAttributes,
  heldOf,
  IMAGE_SK,
  INDEXES,
  imageKeyOf,
  indexKeys,
  toRecord,
} from "./image-item.ts";
import {
  BatchGetItemCommand,
  DeleteItemCommand,
  GetItemCommand,
  type ItemClient,
  PutItemCommand,
  paginateQuery,
  paginateScan,
  refusedAs,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "./item-commands.ts";
import { memberPartition, toMember } from "./member-repository.ts";
import { projectPk, USAGE_SK } from "./quota-store.ts";

/** A stored image item: the record's fields plus what the image holds against quota (`held_*`). */
type Item = Record<string, unknown>;

/** Keys BatchGetItem takes in one request. */
const BATCH_GET_MAX = 100;

/** Attempts of one write after races it cannot see from its own condition (quota usage, what is held). */
const MAX_ATTEMPTS = 8;
const backoff = (attempt: number) =>
  new Promise((r) => setTimeout(r, Math.random() * Math.min(1000, 20 * 2 ** attempt)));

/** Options of `transition` (see ImageRepository). */
type TransitionOptions = NonNullable<Parameters<ImageRepository["transition"]>[3]>;

/** One conditional write of an image, as data. */
interface WriteSpec {
  /** Fields to set; index keys and what the image holds follow from the record they make. */
  changes: Partial<ImageRecord>;
  /** What must hold of the stored record for the write to happen, as named fragments. */
  when: Condition<Item>;
  /** Statuses the write expects, named in the StaleStatusError when it loses. */
  expected: readonly string[];
  /**
   * Whether a lost condition is retried here when the write still applies to the record found (what the
   * image holds changed meanwhile). `update` leaves that to its caller, which recomputes its change.
   */
  retryRaces: boolean;
  /** The record the caller read (`get`), to start from instead of reading it again. */
  from?: ImageRecord | undefined;
}

/** What held for the item when it was read: its held counters (absent on items older than quotas). */
function heldIs(before: Counters): Condition<Item> {
  return allOf(...QUOTA_KEYS.map((k) => equals<Item>(heldAttribute(k), before[k], { as: before[k] })));
}

/** How a write failed: the image's condition (with the item found), the usage limit, a conflict, other. */
type Failure =
  | { kind: "image"; item: Item | undefined }
  | { kind: "usage" }
  | { kind: "conflict" }
  | { kind: "other" };

function failureOf(err: unknown): Failure {
  if (refusedAs(err, "ConditionalCheckFailedException")) {
    return { kind: "image", item: err.Item ? unmarshall(err.Item) : undefined };
  }
  if (!refusedAs(err, "TransactionCanceledException")) return { kind: "other" };
  const [image, usage] = err.CancellationReasons ?? [];
  if (image?.Code === "ConditionalCheckFailed") {
    return { kind: "image", item: image.Item ? unmarshall(image.Item) : undefined };
  }
  if (usage?.Code === "ConditionalCheckFailed") return { kind: "usage" };
  const conflict = (err.CancellationReasons ?? []).some((r) => r.Code === "TransactionConflict");
  return conflict ? { kind: "conflict" } : { kind: "other" };
}

/**
 * DynamoDB adapter: one item per image, every state change a conditional write built from a `WriteSpec`.
 * Every write that changes what an image holds (see `heldBy`) also changes its project's usage by the
 * difference, in one transaction whose conditions keep usage within the limits.
 */
export class DynamoImageRepository implements ImageRepository {
  /** The item each record `get` returned was read from, for a write that starts from that record. */
  private readonly readItems = new WeakMap<ImageRecord, Item>();

  constructor(
    private readonly client: ItemClient,
    private readonly table: string,
    private readonly quota: QuotaStore,
  ) {}

  async create(image: ImageRecord): Promise<void> {
    const held = heldBy(image);
    const p = new Placeholders();
    const put = {
      TableName: this.table,
      Item: marshall(
        { ...imageKeyOf(image.id), ...indexKeys(image).set, ...image, ...heldAttributes(held) },
        { removeUndefinedValues: true },
      ),
      ConditionExpression: `attribute_not_exists(${p.name("pk")})`,
      ExpressionAttributeNames: p.names,
    };
    const duplicate = (err: unknown) =>
      new ConflictError(`An image with ID ${image.id} already exists.`, "DUPLICATE_ID", { cause: err });
    for (let attempt = 0; ; attempt++) {
      try {
        if (isZero(held)) await this.client.send(new PutItemCommand(put));
        else {
          // Limits as the quota store keeps them; a refusal is decided again on fresh ones (afterRace).
          const usage = await this.usageUpdate(image.owner, held);
          await this.client.send(
            new TransactWriteItemsCommand({ TransactItems: [{ Put: put }, { Update: usage }] }),
          );
        }
        return;
      } catch (err) {
        const failure = failureOf(err);
        if (failure.kind === "image") throw duplicate(err);
        await this.afterRace(failure, image.owner, held, attempt, err);
      }
    }
  }

  /**
   * Decides whether a write that lost to a race on the usage item is tried again (after a pause):
   * a limit that really is exceeded, any other error, or too many attempts end it.
   */
  private async afterRace(
    failure: Failure,
    project: string,
    delta: Counters,
    attempt: number,
    err: unknown,
  ): Promise<void> {
    if (failure.kind === "usage") {
      const refusal = await this.exceeded(project, delta, err);
      // Refused at a moment the project was full, but others' writes have freed room since: write again.
      if (refusal instanceof QuotaExceededError || attempt + 1 >= MAX_ATTEMPTS) throw refusal;
    } else if (failure.kind !== "conflict" || attempt + 1 >= MAX_ATTEMPTS) throw err;
    await backoff(attempt);
  }

  /**
   * The usage item update adding `delta`, conditioned so no positive change passes a limit. A change
   * larger than a limit by itself can never pass: it is refused here, without a write.
   */
  private async usageUpdate(project: string, delta: Counters): Promise<Update> {
    const tooLarge = (l: Counters) => QUOTA_KEYS.some((k) => l[k] >= 0 && delta[k] > l[k]);
    let limits = await this.quota.limits(project);
    // Refused by limits kept from an earlier read: only limits read now may refuse.
    if (tooLarge(limits)) limits = await this.quota.limits(project, { fresh: true });
    if (tooLarge(limits)) throw await this.exceeded(project, delta, undefined);
    const p = new Placeholders();
    const add: string[] = [];
    const within: string[] = [];
    for (const k of QUOTA_KEYS) {
      if (delta[k] === 0) continue;
      add.push(`${p.name(k)} ${p.value(delta[k])}`);
      if (delta[k] > 0 && limits[k] >= 0) {
        within.push(
          `(attribute_not_exists(${p.name(k)}) OR ${p.name(k)} <= ${p.value(limits[k] - delta[k])})`,
        );
      }
    }
    return {
      TableName: this.table,
      Key: marshall({ pk: projectPk(project), sk: USAGE_SK }),
      UpdateExpression: `ADD ${add.join(", ")}`,
      ...(within.length ? { ConditionExpression: within.join(" AND ") } : {}),
      ExpressionAttributeNames: p.names,
      ExpressionAttributeValues: marshall(p.values),
    };
  }

  /**
   * Names the counter that overflowed, with the numbers, from a fresh read of usage and limits (which the
   * next attempt then writes with); a conflict to retry when nothing overflows by them.
   */
  private async exceeded(project: string, delta: Counters, cause: unknown): Promise<Error> {
    const [usage, limits] = await Promise.all([
      this.quota.usage(project),
      this.quota.limits(project, { fresh: true }),
    ]);
    const key = overLimit(usage, delta, limits);
    if (!key)
      return new ConflictError("Usage changed concurrently; try again.", "CONCURRENT_UPDATE", { cause });
    return new QuotaExceededError(project, key, limits[key], usage[key], delta[key]);
  }

  async get(id: string): Promise<ImageRecord | undefined> {
    const item = await this.item(id);
    if (!item) return undefined;
    const record = toRecord(item);
    this.readItems.set(record, item);
    return record;
  }

  private async item(id: string): Promise<Item | undefined> {
    const out = await this.client.send(
      new GetItemCommand({ TableName: this.table, Key: marshall(imageKeyOf(id)), ConsistentRead: true }),
    );
    return out.Item ? unmarshall(out.Item) : undefined;
  }

  /**
   * One listing source in creation order, strictly after `options.after`, read one Query page at a time
   * as the caller consumes it: a page of a list costs the Query pages its items come from, never a read
   * of the whole partition.
   */
  async *list(source: ListSource, options: ListOptions): AsyncIterable<ListedImage> {
    const desc = options.order === "desc";
    const p = new Placeholders();
    const [index, partition] = this.partitionOf(source);
    let condition = `${p.name(`${index}pk`)} = ${p.value(partition)}`;
    if (options.after !== undefined) {
      condition += ` AND ${p.name(`${index}sk`)} ${desc ? "<" : ">"} ${p.value(options.after)}`;
    }
    let filter: string | undefined;
    if (source.kind === "member" && source.status !== "all") {
      filter = `${p.name("status")} = ${p.value(source.status)}`;
    }
    const pages = paginateQuery(
      { client: this.client, pageSize: options.pageSize },
      {
        TableName: this.table,
        IndexName: index,
        KeyConditionExpression: condition,
        ...(filter ? { FilterExpression: filter } : {}),
        ExpressionAttributeNames: p.names,
        ExpressionAttributeValues: marshall(p.values),
        ScanIndexForward: !desc,
      },
    );
    for await (const page of pages) {
      const items = page.Items ?? [];
      if (source.kind !== "member") {
        for (const item of items) yield { image: toRecord(unmarshall(item)) };
        continue;
      }
      // A share names its image; the images of a page's shares are read together, in one batch.
      const shares = items.map(toMember);
      const images = await this.getMany(shares.map((m) => m.image_id));
      for (const share of shares) {
        const image = images.get(share.image_id);
        if (image) yield { image, memberStatus: share.status };
      }
    }
  }

  /**
   * The records of `ids` (those that exist), read consistently with BatchGetItem: one request per 100
   * ids, again for any keys DynamoDB leaves unprocessed (after a pause, as it asks).
   */
  private async getMany(ids: readonly string[]): Promise<Map<string, ImageRecord>> {
    const found = new Map<string, ImageRecord>();
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += BATCH_GET_MAX) {
      let keys = unique.slice(i, i + BATCH_GET_MAX).map((id) => marshall(imageKeyOf(id)));
      for (let attempt = 0; keys.length > 0; attempt++) {
        if (attempt > 0) await backoff(attempt);
        const out = await this.client.send(
          new BatchGetItemCommand({ RequestItems: { [this.table]: { Keys: keys, ConsistentRead: true } } }),
        );
        for (const item of out.Responses?.[this.table] ?? []) {
          const record = toRecord(unmarshall(item));
          found.set(record.id, record);
        }
        keys = out.UnprocessedKeys?.[this.table]?.Keys ?? [];
      }
    }
    return found;
  }

  private partitionOf(source: ListSource): [string, string] {
    switch (source.kind) {
      case "all":
        return [INDEXES.all, ALL_IMAGES];
      case "owner":
        return [INDEXES.owner, `OWNER#${source.owner}`];
      case "visibility":
        return [INDEXES.visibility, `VIS#${source.visibility}`];
      case "member":
        return [INDEXES.owner, memberPartition(source.member)];
    }
  }

  /** A consistent read of every image item (reconciliation and sweeps, which must see everything). */
  async listAll(): Promise<ImageRecord[]> {
    const p = new Placeholders();
    const pages = paginateScan(
      { client: this.client },
      {
        TableName: this.table,
        FilterExpression: `${p.name("sk")} = ${p.value(IMAGE_SK)}`,
        ExpressionAttributeNames: p.names,
        ExpressionAttributeValues: marshall(p.values),
        ConsistentRead: true,
      },
    );
    const records: ImageRecord[] = [];
    for await (const page of pages) {
      for (const item of page.Items ?? []) records.push(toRecord(unmarshall(item)));
    }
    return records;
  }

  async transition(
    id: string,
    name: TransitionName,
    changes: Partial<ImageRecord>,
    options: TransitionOptions = {},
  ): Promise<ImageRecord> {
    const edge = TRANSITIONS[name];
    const { allowExpiredLeaseFrom: leaseFrom, now } = options;
    let status = isIn<Item>("status", edge.from);
    if (leaseFrom && now) {
      // An importer that died holding the image: its lease has passed, another may take over.
      status = anyOf(
        status,
        allOf(isIn<Item>("status", [leaseFrom]), lessThan<Item>("import_lease_until", now)),
      );
    }
    const when = [status];
    if (options.leaseIs !== undefined) when.push(equals<Item>("import_lease_until", options.leaseIs));
    // Part of the same conditional write, so a protection set after our read still stops it.
    if (options.unlessProtected) when.push(equals<Item>("protected", false, { as: false }));
    return this.write(id, {
      changes: { ...changes, status: edge.to },
      when: allOf(...when),
      expected: edge.from,
      retryRaces: true,
      from: options.from,
    });
  }

  async update(
    id: string,
    changes: Partial<ImageRecord>,
    whileIn: readonly ImageStatus[],
    options: { unchanged?: Partial<ImageRecord>; from?: ImageRecord } = {},
  ): Promise<ImageRecord> {
    // Fields read, changed and written back whole (tags, properties): the write holds only if nobody
    // changed them in between.
    const unchanged = Object.entries(options.unchanged ?? {}).map(([field, value]) =>
      equals<Item>(field, value),
    );
    return this.write(id, {
      changes,
      when: allOf(isIn<Item>("status", whileIn), ...unchanged),
      expected: whileIn,
      retryRaces: false,
      from: options.from,
    });
  }

  /**
   * Writes `spec.changes` with its condition, the index keys the new record implies, and what it holds
   * (conditioned on what it held when read), in one UpdateItem; in a transaction with the project's usage
   * item when what it holds changes. The item is read once (not at all when the caller's record says
   * what it was); a lost write returns the item it found (`ALL_OLD`), from which the next attempt starts.
   * A condition that fails on the record found is a StaleStatusError carrying that record.
   */
  private async write(id: string, spec: WriteSpec): Promise<ImageRecord> {
    const read = spec.from?.id === id ? this.readItems.get(spec.from) : undefined;
    let item = read ?? (await this.item(id));
    for (let attempt = 0; ; attempt++) {
      if (!item) throw new StaleStatusError(id, spec.expected);
      const current = toRecord(item);
      // What the condition would refuse is refused without a write.
      if (!spec.when.holds({ ...item, ...current }))
        throw new StaleStatusError(id, spec.expected, { current });
      const next: ImageRecord = { ...current, ...spec.changes };
      const before = heldOf(item, current);
      const delta = difference(before, heldBy(next));
      const request = this.imageUpdate(id, spec, next, before);
      try {
        if (isZero(delta)) {
          const out = await this.client.send(new UpdateItemCommand({ ...request, ReturnValues: "ALL_NEW" }));
          return toRecord(unmarshall(out.Attributes ?? {}));
        }
        const usage = await this.usageUpdate(next.owner, delta);
        await this.client.send(
          new TransactWriteItemsCommand({ TransactItems: [{ Update: request }, { Update: usage }] }),
        );
        return next;
      } catch (err) {
        const failure = failureOf(err);
        if (failure.kind !== "image") {
          await this.afterRace(failure, next.owner, delta, attempt, err);
          continue;
        }
        item = failure.item;
        if (!spec.retryRaces || attempt + 1 >= MAX_ATTEMPTS) {
          throw new StaleStatusError(id, spec.expected, {
            cause: err,
            current: item ? toRecord(item) : undefined,
          });
        }
        await backoff(attempt);
      }
    }
  }

  /** The UpdateItem of a write: changes, index keys and held counters, under the spec's condition. */
  private imageUpdate(id: string, spec: WriteSpec, next: ImageRecord, before: Counters): Update {
    const p = new Placeholders();
    const index = indexKeys(next);
    const update = updateExpression(
      p,
      { ...spec.changes, ...index.set, ...heldAttributes(heldBy(next)) },
      index.remove,
    );
    const condition = allOf(exists<Item>(), spec.when, heldIs(before)).render(p);
    return {
      TableName: this.table,
      Key: marshall(imageKeyOf(id)),
      UpdateExpression: update,
      ConditionExpression: condition,
      ExpressionAttributeNames: p.names,
      ExpressionAttributeValues: marshall(p.values, { removeUndefinedValues: true }),
      ReturnValuesOnConditionCheckFailure: "ALL_OLD",
    };
  }

  async purge(id: string): Promise<void> {
    const p = new Placeholders();
    await this.client.send(
      new DeleteItemCommand({
        TableName: this.table,
        Key: marshall(imageKeyOf(id)),
        ConditionExpression: isIn<Item>("status", ["deleted"]).render(p),
        ExpressionAttributeNames: p.names,
        ExpressionAttributeValues: marshall(p.values),
      }),
    );
  }
}
