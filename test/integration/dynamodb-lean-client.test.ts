import { randomUUID } from "node:crypto";
import * as sdkCommands from "@aws-sdk/client-dynamodb";
import { marshall } from "@aws-sdk/util-dynamodb";
import { afterAll, describe, expect, it } from "vitest";
import {
  DynamoDBRefusal,
  GetItemCommand,
  PutItemCommand,
  paginateQuery,
  QueryCommand,
  refusedAs,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "../../functions/adapters/dynamodb/item-commands.ts";
import { LeanDynamoDBClient } from "../../functions/adapters/dynamodb/lean-client.ts";
import { useAwsKeys } from "../aws-keys.ts";
import { dynamoDbClient, getStack } from "./setup/stack.ts";

const info = getStack();
// The lean calls sign with the default credential chain, as the functions do.
const restoreKeys = useAwsKeys(info.accessKeyId, info.secretAccessKey);
const sdk = dynamoDbClient();
const lean = new LeanDynamoDBClient({ region: info.region, endpoint: info.dynamodbEndpoint });
afterAll(() => {
  sdk.destroy();
  restoreKeys();
});

const table = info.table;
const key = (id: string) => ({ pk: `LEAN#${id}`, sk: "ITEM" });
/** What an answer holds, without the call's metadata (which differs between the two clients). */
const data = ({ $metadata: _, ...rest }: { $metadata?: unknown }) => rest;

describe("LeanDynamoDBClient (DynamoDB Local)", () => {
  it("answers reads, writes and queries as the SDK does, binary attributes included", async () => {
    const id = randomUUID();
    const item = {
      ...key(id),
      gsi1pk: `OWNER#lean-${id}`,
      gsi1sk: `2026-01-01T00:00:00.000Z#${id}`,
      name: "lean",
      size: 12345678901,
      tags: ["a", "b"],
      properties: { k: "v", n: 1, nested: { yes: true, none: null } },
      bytes: new Uint8Array([0, 1, 2, 250, 255]),
      byteSet: new Set([new Uint8Array([1]), new Uint8Array([2, 3])]),
    };
    await lean.send(new PutItemCommand({ TableName: table, Item: marshall(item) }));
    const get = new GetItemCommand({ TableName: table, Key: marshall(key(id)), ConsistentRead: true });
    const [fromLean, fromSdk] = [
      await lean.send(get),
      await sdk.send(new sdkCommands.GetItemCommand(get.input)),
    ];
    expect(data(fromLean)).toEqual(data(fromSdk));
    expect(fromLean.Item?.bytes?.B).toEqual(new Uint8Array([0, 1, 2, 250, 255]));
    expect(fromLean.$metadata.httpStatusCode).toBe(200);

    const update = new UpdateItemCommand({
      TableName: table,
      Key: marshall(key(id)),
      UpdateExpression: "ADD #size :one",
      ConditionExpression: "#name = :name",
      ExpressionAttributeNames: { "#size": "size", "#name": "name" },
      ExpressionAttributeValues: marshall({ ":one": 1, ":name": "lean" }),
      ReturnValues: "ALL_NEW",
    });
    expect((await lean.send(update)).Attributes?.size).toEqual({ N: "12345678902" });

    const query = new QueryCommand({
      TableName: table,
      IndexName: "gsi1",
      KeyConditionExpression: "gsi1pk = :p",
      ExpressionAttributeValues: marshall({ ":p": `OWNER#lean-${id}` }),
    });
    expect(data(await lean.send(query))).toEqual(
      data(await sdk.send(new sdkCommands.QueryCommand(query.input))),
    );
  });

  it("refuses as the SDK does: the same error name and message, with what DynamoDB sent", async () => {
    const id = randomUUID();
    await lean.send(new PutItemCommand({ TableName: table, Item: marshall({ ...key(id), name: "first" }) }));
    const put = new PutItemCommand({
      TableName: table,
      Item: marshall({ ...key(id), name: "second" }),
      ConditionExpression: "attribute_not_exists(pk)",
      ReturnValuesOnConditionCheckFailure: "ALL_OLD",
    });
    const again = await lean.send(put).catch((e: unknown) => e);
    const bySdk = await sdk.send(new sdkCommands.PutItemCommand(put.input)).catch((e: unknown) => e);
    expect(bySdk).toBeInstanceOf(sdkCommands.ConditionalCheckFailedException);
    expect(again).toBeInstanceOf(DynamoDBRefusal);
    expect(refusedAs(again, "ConditionalCheckFailedException")).toBe(true);
    expect(refusedAs(bySdk, "ConditionalCheckFailedException")).toBe(true);
    const refusal = again as DynamoDBRefusal;
    expect(refusal.message).toBe((bySdk as Error).message);
    expect(refusal.Item?.name).toEqual({ S: "first" });
    expect(refusal.Item).toEqual((bySdk as sdkCommands.ConditionalCheckFailedException).Item);
    expect(refusal.$metadata.httpStatusCode).toBe(400);
    expect(refusal.$fault).toBe("client");

    const other = randomUUID();
    const cancelled = await lean
      .send(
        new TransactWriteItemsCommand({
          TransactItems: [
            {
              Put: {
                TableName: table,
                Item: marshall({ ...key(id), name: "third" }),
                ConditionExpression: "attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure: "ALL_OLD",
              },
            },
            { Put: { TableName: table, Item: marshall({ ...key(other), name: "other" }) } },
          ],
        }),
      )
      .catch((e: unknown) => e);
    expect(refusedAs(cancelled, "TransactionCanceledException")).toBe(true);
    const reasons = (cancelled as DynamoDBRefusal).CancellationReasons ?? [];
    expect(reasons.map((r) => r.Code)).toEqual(["ConditionalCheckFailed", "None"]);
    expect(reasons[0]?.Item?.name).toEqual({ S: "first" });
    // Nothing of the cancelled transaction was written.
    const left = await sdk.send(
      new sdkCommands.GetItemCommand({ TableName: table, Key: marshall(key(other)), ConsistentRead: true }),
    );
    expect(left.Item).toBeUndefined();
  });

  it("pages a Query as the SDK's paginator does", async () => {
    const owner = `OWNER#lean-pages-${randomUUID()}`;
    for (let i = 0; i < 5; i++) {
      const id = randomUUID();
      await lean.send(
        new PutItemCommand({
          TableName: table,
          Item: marshall({ ...key(id), gsi1pk: owner, gsi1sk: `2026-01-0${i + 1}T00:00:00.000Z#${id}` }),
        }),
      );
    }
    const input = {
      TableName: table,
      IndexName: "gsi1",
      KeyConditionExpression: "gsi1pk = :p",
      ExpressionAttributeValues: marshall({ ":p": owner }),
    };
    const ours: { Count?: number }[] = [];
    for await (const page of paginateQuery({ client: lean, pageSize: 2 }, input)) ours.push(data(page));
    const theirs: { Count?: number }[] = [];
    for await (const page of sdkCommands.paginateQuery({ client: sdk, pageSize: 2 }, input))
      theirs.push(data(page));
    expect(ours.map((p) => p.Count)).toEqual([2, 2, 1]);
    expect(ours).toEqual(theirs);
  });
});
