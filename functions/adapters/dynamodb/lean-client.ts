import { randomUUID } from "node:crypto";
import { AwsRequestError, isTransient, SignedJsonClient } from "../aws/signed-request.ts";
import { DynamoDBRefusal, type ItemClient, type ItemCommand } from "./item-commands.ts";

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

/** The refusal DynamoDB sent (`{"__type": "ns#Type", "message", …fields}`), its fields on the error. */
function refusalOf(error: AwsRequestError): Error {
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(error.body, reviveBinary) as Record<string, unknown>;
  } catch {
    // Not JSON (a proxy's page): the status and type are all there is.
  }
  const { __type: _, message, Message, ...fields } = body;
  const text = String(message ?? Message ?? error.message);
  return new DynamoDBRefusal(error.type || "DynamoDBServiceException", text, error.status, {
    ...fields,
    ...(Message !== undefined ? { Message } : {}),
  });
}

/**
 * DynamoDB's item reads, writes and queries, each one SigV4-signed JSON POST (`SignedJsonClient`),
 * without the SDK's client: its per-call middleware (schema serialisation, endpoint resolution, retry
 * bookkeeping, user agent, signer) was about as much of the API function's CPU as a show's whole
 * remaining work, and loading it was the largest part of the api's module init. Requests and answers
 * are DynamoDB's JSON protocol, which is the SDK commands' own input and output shape (binary attributes
 * travel as base64); a refusal is a `DynamoDBRefusal` named by its type with the fields DynamoDB sent
 * (`Item`, `CancellationReasons`); throttling and 5xx are tried again as the SDK's standard retry mode
 * does, and a transaction gets the idempotency token the SDK would give it.
 */
export class LeanDynamoDBClient implements ItemClient {
  private readonly lean: SignedJsonClient;

  constructor(config: {
    region: string;
    endpoint?: string;
    /** Keys to sign with; the default chain's (the role's, in Lambda) when not given. */
    credentials?: { accessKeyId: string; secretAccessKey: string };
  }) {
    this.lean = new SignedJsonClient({
      service: "dynamodb",
      region: config.region,
      ...(config.endpoint ? { endpoint: config.endpoint } : {}),
      ...(config.credentials ? { credentials: config.credentials } : {}),
      timeoutMs: TIMEOUT_MS,
      describe: "DynamoDB",
    });
  }

  send<I, O>(command: ItemCommand<I, O>): Promise<O> {
    return this.call(command.operation, command.input as Record<string, unknown>) as Promise<O>;
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
