import { randomUUID } from "node:crypto";
import {
  BatchGetItemCommand,
  ConditionalCheckFailedException,
  DeleteItemCommand,
  DynamoDBClient,
  type DynamoDBClientConfig,
  DynamoDBServiceException,
  GetItemCommand,
  InternalServerError,
  ProvisionedThroughputExceededException,
  PutItemCommand,
  QueryCommand,
  RequestLimitExceeded,
  ResourceNotFoundException,
  ThrottlingException,
  TransactionCanceledException,
  TransactionConflictException,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { AwsRequestError, isTransient, SignedJsonClient } from "../aws/signed-request.ts";

/** The operations sent as one signed POST; any other command goes through the SDK's stack. */
const OPERATIONS = new Map<unknown, string>([
  [GetItemCommand, "GetItem"],
  [PutItemCommand, "PutItem"],
  [UpdateItemCommand, "UpdateItem"],
  [DeleteItemCommand, "DeleteItem"],
  [TransactWriteItemsCommand, "TransactWriteItems"],
  [QueryCommand, "Query"],
  [BatchGetItemCommand, "BatchGetItem"],
]);

/** DynamoDB's refusals as the SDK throws them, by error type; others are a `DynamoDBServiceException`. */
type Refusal = new (
  options: ConstructorParameters<typeof DynamoDBServiceException>[0] & Record<string, unknown>,
) => DynamoDBServiceException;
let refusals: Map<string, Refusal> | undefined;
/**
 * The SDK's class for a refusal type, keyed by each class's own error name (class names do not survive
 * minification); made at the first refusal, not in the module's init.
 */
function refusalClass(type: string): Refusal | undefined {
  refusals ??= new Map(
    (
      [
        ConditionalCheckFailedException,
        TransactionCanceledException,
        TransactionConflictException,
        ProvisionedThroughputExceededException,
        ThrottlingException,
        RequestLimitExceeded,
        ResourceNotFoundException,
        InternalServerError,
      ] as unknown as Refusal[]
    ).map((c) => [new c({ message: "", $metadata: {} } as never).name, c]),
  );
  return refusals.get(type);
}

/** Refusals DynamoDB answers with 400 that the SDK's standard retry mode tries again. */
const THROTTLED = new Set([
  "ThrottlingException",
  "ProvisionedThroughputExceededException",
  "RequestLimitExceeded",
  "TooManyRequestsException",
]);

/** Per attempt: a request DynamoDB has not answered by then is tried again. */
const TIMEOUT_MS = 10_000;

/** A binary attribute (`B`, `BS`) of an answer, base64 on the wire, as the SDK gives it: bytes. */
function reviveBinary(key: string, value: unknown): unknown {
  if (key === "B" && typeof value === "string") return new Uint8Array(Buffer.from(value, "base64"));
  if (key === "BS" && Array.isArray(value) && value.every((v) => typeof v === "string"))
    return value.map((v) => new Uint8Array(Buffer.from(v, "base64")));
  return value;
}

/** Bytes in a request (a binary attribute) as the JSON protocol sends them: base64. */
function binaryAsBase64(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const raw = this[key];
  return raw instanceof Uint8Array
    ? Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("base64")
    : value;
}

/** The SDK's exception for a refusal DynamoDB sent (`{"__type": "ns#Type", "message", …fields}`). */
function refusalOf(error: AwsRequestError): Error {
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(error.body, reviveBinary) as Record<string, unknown>;
  } catch {
    // Not JSON (a proxy's page): the status and type are all there is.
  }
  const type = error.type ?? "";
  const { __type: _, message, Message, ...fields } = body;
  const text = String(message ?? Message ?? error.message);
  const options = {
    ...fields,
    ...(Message !== undefined ? { Message } : {}),
    name: type || "DynamoDBServiceException",
    $fault: error.status >= 500 ? ("server" as const) : ("client" as const),
    $metadata: { httpStatusCode: error.status },
    message: text,
  };
  const Known = refusalClass(type);
  return Known ? new Known(options) : new DynamoDBServiceException(options);
}

/**
 * A DynamoDBClient whose item reads, writes and queries are each one SigV4-signed JSON POST
 * (`SignedJsonClient`), without the SDK's per-call middleware: its schema serialisation, endpoint
 * resolution, retry bookkeeping, user agent and signer were about as much of the API function's CPU as a
 * show's whole remaining work. Requests and answers are DynamoDB's JSON protocol, which is the commands'
 * own input and output shape (binary attributes travel as base64); refusals are the SDK's exception
 * classes with the same fields (`Item`, `CancellationReasons`), throttling and 5xx are tried again as the
 * SDK's standard retry mode does, and a transaction gets the idempotency token the SDK would give it.
 * Commands sent with options, and every other operation, go through the SDK as before.
 */
export class LeanDynamoDBClient extends DynamoDBClient {
  private readonly lean: SignedJsonClient;

  constructor(config: DynamoDBClientConfig & { region: string; endpoint?: string }) {
    super(config);
    this.lean = new SignedJsonClient({
      service: "dynamodb",
      region: config.region,
      ...(config.endpoint ? { endpoint: config.endpoint } : {}),
      timeoutMs: TIMEOUT_MS,
      describe: "DynamoDB",
    });
    // A command alone is answered here; with options or a callback it goes through the SDK's own send.
    const sdkSend = this.send.bind(this) as (...args: unknown[]) => unknown;
    this.send = ((command: { input: unknown }, ...rest: unknown[]) => {
      const operation = rest.length === 0 ? OPERATIONS.get(command.constructor) : undefined;
      return operation
        ? this.call(operation, command.input as Record<string, unknown>)
        : sdkSend(command, ...rest);
    }) as DynamoDBClient["send"];
  }

  private async call(operation: string, input: Record<string, unknown>): Promise<unknown> {
    const body =
      operation === "TransactWriteItems" && input.ClientRequestToken === undefined
        ? { ...input, ClientRequestToken: randomUUID() }
        : input;
    try {
      const { status, text } = await this.lean.post(
        "/",
        {
          "content-type": "application/x-amz-json-1.0",
          "x-amz-target": `DynamoDB_20120810.${operation}`,
        },
        JSON.stringify(body, binaryAsBase64),
        [200],
        (e) => isTransient(e) || THROTTLED.has(e.type ?? ""),
      );
      const out = JSON.parse(text, text.includes('"B') ? reviveBinary : undefined) as Record<string, unknown>;
      out.$metadata = { httpStatusCode: status };
      return out;
    } catch (error) {
      throw error instanceof AwsRequestError ? refusalOf(error) : error;
    }
  }
}
