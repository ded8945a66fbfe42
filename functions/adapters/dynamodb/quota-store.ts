import { marshall, unmarshall } from "@aws-sdk/util-dynamodb";
import {
  type Counters,
  type Limits,
  QUOTA_KEYS,
  type QuotaKey,
  type QuotaStore,
  ZERO,
} from "../../core/quota.ts";
import {
  GetItemCommand,
  type ItemClient,
  PutItemCommand,
  paginateScan,
  refusedAs,
  UpdateItemCommand,
} from "./item-commands.ts";

export const projectPk = (project: string) => `PROJECT#${project}`;
export const USAGE_SK = "USAGE";
const LIMITS_SK = "LIMITS";

export function countersOf(item: Record<string, unknown> | undefined): Counters {
  const out = { ...ZERO };
  for (const k of QUOTA_KEYS) {
    const v = item?.[k];
    if (typeof v === "number") out[k] = v;
  }
  return out;
}

/** How long a warm function keeps a project's limits before reading them again (see `DynamoQuotaStore`). */
export const LIMITS_CACHE_MS = 30_000;
/** Projects whose limits one function keeps at most; the oldest entry makes room. */
const LIMITS_CACHE_ENTRIES = 1000;

export interface QuotaStoreOptions {
  /** How long limits read once serve later writes; 0 reads them for every write. */
  limitsCacheMs?: number;
  /** Milliseconds now (tests move it). */
  now?: () => number;
}

/**
 * Usage lives at `PROJECT#<id>`/`USAGE` and is only changed by `ADD` in the same transaction as the image
 * write that causes it (see DynamoImageRepository); limit overrides at `PROJECT#<id>`/`LIMITS`.
 *
 * Limits change rarely and every write that holds quota needs them, so a function keeps each project's
 * limits for `limitsCacheMs` (default `LIMITS_CACHE_MS`) after reading them. `limits(p, { fresh: true })`
 * reads them again and keeps what it read; `setLimits` keeps what it wrote. A write refused by a cached
 * limit is decided again on fresh limits (DynamoImageRepository), so a raised limit takes effect at once;
 * a lowered one at once in the function that set it, and in other warm functions within the cache time.
 */
export class DynamoQuotaStore implements QuotaStore {
  private readonly cached = new Map<string, { limits: Limits; until: number }>();
  private readonly cacheMs: number;
  private readonly now: () => number;

  constructor(
    private readonly client: ItemClient,
    private readonly table: string,
    private readonly defaults: Limits,
    options: QuotaStoreOptions = {},
  ) {
    this.cacheMs = options.limitsCacheMs ?? LIMITS_CACHE_MS;
    this.now = options.now ?? Date.now;
  }

  private async item(project: string, sk: string): Promise<Record<string, unknown> | undefined> {
    const out = await this.client.send(
      new GetItemCommand({
        TableName: this.table,
        Key: marshall({ pk: projectPk(project), sk }),
        ConsistentRead: true,
      }),
    );
    return out.Item ? unmarshall(out.Item) : undefined;
  }

  async usage(project: string): Promise<Counters> {
    return countersOf(await this.item(project, USAGE_SK));
  }

  async limits(project: string, options: { fresh?: boolean } = {}): Promise<Limits> {
    const hit = this.cached.get(project);
    if (hit && !options.fresh && hit.until > this.now()) return { ...hit.limits };
    return this.keep(project, this.limitsOf(await this.item(project, LIMITS_SK)));
  }

  private limitsOf(overrides: Record<string, unknown> | undefined): Limits {
    const out = { ...this.defaults };
    for (const k of QUOTA_KEYS) {
      const v = overrides?.[k];
      if (typeof v === "number") out[k] = v;
    }
    return out;
  }

  private keep(project: string, limits: Limits): Limits {
    if (this.cacheMs <= 0) return limits;
    this.cached.delete(project);
    if (this.cached.size >= LIMITS_CACHE_ENTRIES) {
      const oldest = this.cached.keys().next().value;
      if (oldest !== undefined) this.cached.delete(oldest);
    }
    this.cached.set(project, { limits: { ...limits }, until: this.now() + this.cacheMs });
    return limits;
  }

  async setLimits(project: string, overrides: Partial<Record<QuotaKey, number | null>>): Promise<Limits> {
    const current = (await this.item(project, LIMITS_SK)) ?? {};
    const next: Record<string, unknown> = { pk: projectPk(project), sk: LIMITS_SK, project };
    for (const k of QUOTA_KEYS) {
      const v = k in overrides ? overrides[k] : current[k];
      if (typeof v === "number") next[k] = v;
    }
    await this.client.send(new PutItemCommand({ TableName: this.table, Item: marshall(next) }));
    return this.keep(project, this.limitsOf(next));
  }

  async listProjects(): Promise<string[]> {
    const projects = new Set<string>();
    const pages = paginateScan(
      { client: this.client },
      {
        TableName: this.table,
        FilterExpression: "begins_with(pk, :p) AND (sk = :u OR sk = :l)",
        ExpressionAttributeValues: marshall({ ":p": "PROJECT#", ":u": USAGE_SK, ":l": LIMITS_SK }),
        ProjectionExpression: "pk",
        ConsistentRead: true,
      },
    );
    for await (const page of pages) {
      for (const item of page.Items ?? []) projects.add(String(unmarshall(item).pk).slice("PROJECT#".length));
    }
    return [...projects].sort();
  }

  async replaceUsage(project: string, expected: Counters, next: Counters): Promise<boolean> {
    const names: Record<string, string> = {};
    const values: Record<string, unknown> = {};
    const set: string[] = [];
    const cond: string[] = [];
    QUOTA_KEYS.forEach((k, i) => {
      names[`#k${i}`] = k;
      values[`:n${i}`] = next[k];
      values[`:e${i}`] = expected[k];
      set.push(`#k${i} = :n${i}`);
      // A counter never written reads as 0.
      cond.push(expected[k] === 0 ? `(attribute_not_exists(#k${i}) OR #k${i} = :e${i})` : `#k${i} = :e${i}`);
    });
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall({ pk: projectPk(project), sk: USAGE_SK }),
          UpdateExpression: `SET ${set.join(", ")}`,
          ConditionExpression: cond.join(" AND "),
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: marshall(values),
        }),
      );
      return true;
    } catch (err) {
      if (refusedAs(err, "ConditionalCheckFailedException")) return false;
      throw err;
    }
  }
}
