import type {
  AttributeValue,
  BatchGetItemCommandInput,
  BatchGetItemCommandOutput,
  CancellationReason,
  DeleteItemCommandInput,
  DeleteItemCommandOutput,
  GetItemCommandInput,
  GetItemCommandOutput,
  PutItemCommandInput,
  PutItemCommandOutput,
  QueryCommandInput,
  QueryCommandOutput,
  ScanCommandInput,
  ScanCommandOutput,
  TransactWriteItemsCommandInput,
  TransactWriteItemsCommandOutput,
  UpdateItemCommandInput,
  UpdateItemCommandOutput,
} from "@aws-sdk/client-dynamodb";

/**
 * One DynamoDB item call: its operation and its input, which DynamoDB's JSON protocol sends as they are.
 * The adapters build these instead of the SDK's command classes, so that a function's module init loads
 * no part of the SDK's DynamoDB client; their names and inputs are the SDK's, and so are the outputs.
 */
export abstract class ItemCommand<I, O> {
  abstract readonly operation: string;
  /** The answer's type; never set. */
  declare readonly output: O;
  constructor(readonly input: I) {}
}

export class GetItemCommand extends ItemCommand<GetItemCommandInput, GetItemCommandOutput> {
  readonly operation = "GetItem";
}
export class PutItemCommand extends ItemCommand<PutItemCommandInput, PutItemCommandOutput> {
  readonly operation = "PutItem";
}
export class UpdateItemCommand extends ItemCommand<UpdateItemCommandInput, UpdateItemCommandOutput> {
  readonly operation = "UpdateItem";
}
export class DeleteItemCommand extends ItemCommand<DeleteItemCommandInput, DeleteItemCommandOutput> {
  readonly operation = "DeleteItem";
}
export class TransactWriteItemsCommand extends ItemCommand<
  TransactWriteItemsCommandInput,
  TransactWriteItemsCommandOutput
> {
  readonly operation = "TransactWriteItems";
}
export class QueryCommand extends ItemCommand<QueryCommandInput, QueryCommandOutput> {
  readonly operation = "Query";
}
export class BatchGetItemCommand extends ItemCommand<BatchGetItemCommandInput, BatchGetItemCommandOutput> {
  readonly operation = "BatchGetItem";
}

export class ScanCommand extends ItemCommand<ScanCommandInput, ScanCommandOutput> {
  readonly operation = "Scan";
}

/** What the adapters send their item calls through (`LeanDynamoDBClient`). */
export interface ItemClient {
  send<I, O>(command: ItemCommand<I, O>): Promise<O>;
}

/**
 * A refusal DynamoDB answered with (`ConditionalCheckFailedException`, `TransactionCanceledException`,
 * …): its type is the error's name, and the fields DynamoDB sent with it are the error's.
 */
export class DynamoDBRefusal extends Error {
  declare readonly Item?: Record<string, AttributeValue>;
  declare readonly CancellationReasons?: CancellationReason[];
  readonly $fault: "client" | "server";
  readonly $metadata: { httpStatusCode: number };

  constructor(type: string, message: string, status: number, fields: Record<string, unknown>) {
    super(message);
    Object.assign(this, fields);
    this.name = type;
    this.$fault = status >= 500 ? "server" : "client";
    this.$metadata = { httpStatusCode: status };
  }
}

/** `err` is DynamoDB's refusal of type `type` (by name, as DynamoDB and the SDK both give it). */
export function refusedAs(
  err: unknown,
  type: "ConditionalCheckFailedException" | "TransactionCanceledException",
): err is DynamoDBRefusal {
  return err instanceof Error && err.name === type;
}

/** Where a paginated Query or Scan runs, as the SDK's paginators take it: `pageSize` items per request. */
interface Paginated {
  client: ItemClient;
  pageSize?: number;
}

/**
 * The pages of a Query or Scan as the SDK's paginators give them: each request with `Limit` of
 * `pageSize` (when given) and the previous page's `LastEvaluatedKey`, until a page has none.
 */
async function* paginate<I extends QueryCommandInput | ScanCommandInput, O extends QueryCommandOutput>(
  config: Paginated,
  input: I,
  command: new (input: I) => ItemCommand<I, O>,
): AsyncGenerator<O> {
  let start = input.ExclusiveStartKey;
  do {
    const page: O = await config.client.send(
      new command({
        ...input,
        ...(config.pageSize !== undefined ? { Limit: config.pageSize } : {}),
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
    );
    yield page;
    start = page.LastEvaluatedKey;
  } while (start);
}

export const paginateQuery = (config: Paginated, input: QueryCommandInput) =>
  paginate(config, input, QueryCommand);
export const paginateScan = (config: Paginated, input: ScanCommandInput) =>
  paginate(config, input, ScanCommand);
