import { marshall, unmarshall } from "@aws-sdk/util-dynamodb";
import type { FanoutProgressStore } from "../../core/fanout/ports.ts";
import { imageKeyOf } from "./image-item.ts";
import { type ItemClient, refusedAs, UpdateItemCommand } from "./item-commands.ts";

/** The ranges already counted in `ranges_done` (a number set), so a retried range is counted once. */
const COUNTED = "import_ranges_counted";

/**
 * The fan-out's progress counters, written by one UpdateItem each: `ADD` for counters that several
 * workers bump at once (`ranges_done`), `SET` for the rest, the lease renewed in the same write, all
 * conditional on the image being `importing` under the execution that writes.
 */
export class DynamoFanoutProgress implements FanoutProgressStore {
  constructor(
    private readonly client: ItemClient,
    private readonly table: string,
  ) {}

  async record(
    id: string,
    execution: string,
    changes: { add?: Record<string, number>; set?: Record<string, number>; once?: number },
    leaseUntil: string,
    now: string,
  ): Promise<boolean> {
    const names: Record<string, string> = {
      "#status": "status",
      "#exec": "import_execution",
      "#lease": "import_lease_until",
      "#upd": "updated_at",
      "#p": "import_progress",
      "#pupd": "updated_at",
    };
    const values: Record<string, unknown> = {
      ":importing": "importing",
      ":exec": execution,
      ":lease": leaseUntil,
      ":now": now,
    };
    const set = ["#lease = :lease", "#upd = :now", "#p.#pupd = :now"];
    const add: string[] = [];
    let n = 0;
    for (const [field, value] of Object.entries(changes.set ?? {})) {
      names[`#f${n}`] = field;
      values[`:f${n}`] = value;
      set.push(`#p.#f${n} = :f${n}`);
      n++;
    }
    for (const [field, value] of Object.entries(changes.add ?? {})) {
      names[`#f${n}`] = field;
      values[`:f${n}`] = value;
      add.push(`#p.#f${n} :f${n}`);
      n++;
    }
    let condition = "#status = :importing AND #exec = :exec";
    if (changes.once !== undefined) {
      names["#counted"] = COUNTED;
      values[":once"] = changes.once;
      values[":onceSet"] = new Set([changes.once]);
      add.push("#counted :onceSet");
      condition += " AND NOT contains(#counted, :once)";
    }
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall(imageKeyOf(id)),
          UpdateExpression: `SET ${set.join(", ")}${add.length > 0 ? ` ADD ${add.join(", ")}` : ""}`,
          ConditionExpression: condition,
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: marshall(values),
          ReturnValuesOnConditionCheckFailure: "ALL_OLD",
        }),
      );
      return true;
    } catch (err) {
      if (!refusedAs(err, "ConditionalCheckFailedException")) throw err;
      const item = err.Item ? unmarshall(err.Item) : undefined;
      // Still ours: only the range was counted already (a retried worker).
      return item?.status === "importing" && item.import_execution === execution;
    }
  }
}
