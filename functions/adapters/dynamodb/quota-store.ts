import {
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  paginateScan,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { marshall, unmarshall } from "@aws-sdk/util-dynamodb";
import {
  type Counters,
  type Limits,
  QUOTA_KEYS,
  type QuotaKey,
  type QuotaStore,
  ZERO,
} from "../../core/quota.ts";

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

/**
 * Usage lives at `PROJECT#<id>`/`USAGE` and is only changed by `ADD` in the same transaction as the image
 * write that causes it (see DynamoImageRepository); limit overrides at `PROJECT#<id>`/`LIMITS`.
 */
export class DynamoQuotaStore implements QuotaStore {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly table: string,
    private readonly defaults: Limits,
  ) {}

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

  async limits(project: string): Promise<Limits> {
    const overrides = await this.item(project, LIMITS_SK);
    const out = { ...this.defaults };
    for (const k of QUOTA_KEYS) {
      const v = overrides?.[k];
      if (typeof v === "number") out[k] = v;
    }
    return out;
  }

  async setLimits(project: string, overrides: Partial<Record<QuotaKey, number | null>>): Promise<Limits> {
    const current = (await this.item(project, LIMITS_SK)) ?? {};
    const next: Record<string, unknown> = { pk: projectPk(project), sk: LIMITS_SK, project };
    for (const k of QUOTA_KEYS) {
      const v = k in overrides ? overrides[k] : current[k];
      if (typeof v === "number") next[k] = v;
    }
    await this.client.send(new PutItemCommand({ TableName: this.table, Item: marshall(next) }));
    return this.limits(project);
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
      if (err instanceof ConditionalCheckFailedException) return false;
      throw err;
    }
  }
}
