import {
  ConditionalCheckFailedException,
  type CreateTableCommandInput,
  DescribeTableCommand,
  type DynamoDBClient,
  paginateScan,
  UpdateItemCommand,
  UpdateTableCommand,
  waitUntilTableExists,
} from "@aws-sdk/client-dynamodb";
import { marshall, unmarshall } from "@aws-sdk/util-dynamodb";

/**
 * Hangar's single table. Images live at `IMAGE#<id>`/`IMAGE`, their members at `IMAGE#<id>`/`MEMBER#<project>`,
 * project usage at `PROJECT#<id>`/`USAGE`. Every index is ordered by the images' creation time, then id
 * (`<created_at>#<id>`), the order of Glance's default list: GSI1 lists a project's images (`OWNER#<project>`)
 * and the images shared with it (`MEMBER#<project>`); GSI2 the public and community ones (`VIS#public`,
 * `VIS#community`); GSI3 every image (`IMAGES`, admins' lists). infra/cloudformation/storage.yml declares
 * the same shape (a unit test keeps them equal); the local stack creates the table, or the indexes an
 * older table lacks, from this definition.
 */
export function tableDefinition(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    BillingMode: "PAY_PER_REQUEST",
    AttributeDefinitions: [
      { AttributeName: "pk", AttributeType: "S" },
      { AttributeName: "sk", AttributeType: "S" },
      { AttributeName: "gsi1pk", AttributeType: "S" },
      { AttributeName: "gsi1sk", AttributeType: "S" },
      { AttributeName: "gsi2pk", AttributeType: "S" },
      { AttributeName: "gsi2sk", AttributeType: "S" },
      { AttributeName: "gsi3pk", AttributeType: "S" },
      { AttributeName: "gsi3sk", AttributeType: "S" },
    ],
    KeySchema: [
      { AttributeName: "pk", KeyType: "HASH" },
      { AttributeName: "sk", KeyType: "RANGE" },
    ],
    GlobalSecondaryIndexes: [
      {
        IndexName: "gsi1",
        KeySchema: [
          { AttributeName: "gsi1pk", KeyType: "HASH" },
          { AttributeName: "gsi1sk", KeyType: "RANGE" },
        ],
        Projection: { ProjectionType: "ALL" },
      },
      {
        IndexName: "gsi2",
        KeySchema: [
          { AttributeName: "gsi2pk", KeyType: "HASH" },
          { AttributeName: "gsi2sk", KeyType: "RANGE" },
        ],
        Projection: { ProjectionType: "ALL" },
      },
      {
        IndexName: "gsi3",
        KeySchema: [
          { AttributeName: "gsi3pk", KeyType: "HASH" },
          { AttributeName: "gsi3sk", KeyType: "RANGE" },
        ],
        Projection: { ProjectionType: "ALL" },
      },
    ],
  };
}

/**
 * Brings a table created from an older definition up to this one: creates the indexes it lacks (one at a
 * time, as DynamoDB requires, waiting for each) and writes the index keys older items lack — `gsi3` keys
 * on images, and on memberships a `gsi1sk` in their image's order (older ones sorted by the membership's
 * own creation). Each item write is conditional on the item still existing. The local stack runs it on
 * every start; on AWS, CloudFormation adds the index, and this backfill must be run once against a table
 * that held images before (docs/api.md, "Sort orders and their cost").
 */
export async function upgradeTable(client: DynamoDBClient, tableName: string): Promise<void> {
  const wanted = tableDefinition(tableName);
  for (const index of wanted.GlobalSecondaryIndexes ?? []) {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
    if (Table?.GlobalSecondaryIndexes?.some((i) => i.IndexName === index.IndexName)) continue;
    await client.send(
      new UpdateTableCommand({
        TableName: tableName,
        AttributeDefinitions: wanted.AttributeDefinitions,
        GlobalSecondaryIndexUpdates: [{ Create: index }],
      }),
    );
    await waitUntilTableExists({ client, maxWaitTime: 300 }, { TableName: tableName });
  }
  await backfillIndexKeys(client, tableName);
}

async function backfillIndexKeys(client: DynamoDBClient, tableName: string): Promise<void> {
  const created = new Map<string, string>();
  const members: Record<string, unknown>[] = [];
  const pages = paginateScan(
    { client },
    {
      TableName: tableName,
      FilterExpression: "begins_with(pk, :p)",
      ExpressionAttributeValues: { ":p": { S: "IMAGE#" } },
    },
  );
  for await (const page of pages) {
    for (const raw of page.Items ?? []) {
      const item = unmarshall(raw);
      if (item.sk !== "IMAGE") {
        members.push(item);
        continue;
      }
      created.set(String(item.id), String(item.created_at));
      if (item.gsi3pk !== undefined) continue;
      const order = `${item.created_at}#${item.id}`;
      await setIfExists(client, tableName, item, { gsi3pk: "IMAGES", gsi3sk: order });
    }
  }
  for (const m of members) {
    const at = created.get(String(m.image_id));
    const order = `${at}#${m.image_id}`;
    if (at !== undefined && m.gsi1sk !== order) await setIfExists(client, tableName, m, { gsi1sk: order });
  }
}

async function setIfExists(
  client: DynamoDBClient,
  tableName: string,
  item: Record<string, unknown>,
  values: Record<string, string>,
): Promise<void> {
  const names = Object.keys(values);
  try {
    await client.send(
      new UpdateItemCommand({
        TableName: tableName,
        Key: marshall({ pk: item.pk, sk: item.sk }),
        UpdateExpression: `SET ${names.map((_, i) => `#k${i} = :v${i}`).join(", ")}`,
        ConditionExpression: "attribute_exists(pk)",
        ExpressionAttributeNames: Object.fromEntries(names.map((n, i) => [`#k${i}`, n])),
        ExpressionAttributeValues: marshall(Object.fromEntries(names.map((n, i) => [`:v${i}`, values[n]]))),
      }),
    );
  } catch (err) {
    // Deleted since the scan: nothing to index.
    if (!(err instanceof ConditionalCheckFailedException)) throw err;
  }
}
