import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { type AsyncInvoker, UnknownFunctionError } from "./async-invoker.ts";
import { PutEventsError, putEvents } from "./eventbridge.ts";
import { InvocationError, type LocalFunction } from "./runtime.ts";
import { type LocalStepFunctions, StepFunctionsError } from "./step-functions.ts";

/** Lambda's limits: 6 MB for a synchronous payload, 256 KB for an asynchronous one. */
const MAX_SYNC_PAYLOAD = 6 * 1024 * 1024;
const MAX_EVENT_PAYLOAD = 256 * 1024;

const INVOKE_PATH = /^\/2015-03-31\/functions\/([^/]+)\/invocations$/;

/**
 * The part of the AWS APIs the functions use, on one loopback address. EventBridge's PutEvents
 * (`X-Amz-Target: AWSEvents.PutEvents`) appends to `eventsFile` (see eventbridge.ts). Step Functions'
 * StartExecution (`AWSStepFunctions.StartExecution`) runs the fan-out definition (step-functions.ts).
 * The Lambda API:
 * `POST /2015-03-31/functions/{name}/invocations`.
 * `X-Amz-Invocation-Type: Event` queues the payload (202) on the asynchronous path, with its retries and
 * failure destination; `RequestResponse` (the default) runs it and answers with what the handler
 * returned, or Lambda's error payload with `X-Amz-Function-Error: Unhandled`. Requests are not
 * authenticated: the server listens on loopback only, as the rest of the stack does.
 */
export function createInvokeApi(
  functions: ReadonlyMap<string, LocalFunction>,
  invoker: AsyncInvoker,
  log: (line: string) => void,
  events: { file: string; region: string },
  stepFunctions?: LocalStepFunctions,
): Server {
  const serviceCall = (target: string): ServiceCall | undefined => {
    if (target === "AWSEvents.PutEvents") {
      return {
        name: "PutEvents",
        run: (body) => putEvents(events.file, events.region, body),
        refusal: (err) =>
          err instanceof PutEventsError ? { type: "ValidationException", message: err.message } : undefined,
        fault: ["InternalException", "the local event bus could not write"],
      };
    }
    if (target === "AWSStepFunctions.StartExecution" && stepFunctions) {
      return {
        name: "StartExecution",
        run: (body) => stepFunctions.startExecution(body),
        refusal: (err) =>
          err instanceof StepFunctionsError ? { type: err.type, message: err.message } : undefined,
        fault: ["InternalFailure", "the local Step Functions failed"],
      };
    }
    return undefined;
  };
  return createServer((req: IncomingMessage, res: ServerResponse) => {
    const match = req.method === "POST" ? INVOKE_PATH.exec((req.url ?? "").split("?")[0] ?? "") : null;
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_SYNC_PAYLOAD) chunks.push(chunk);
    });
    req.on("end", () => {
      const service =
        req.method === "POST" ? serviceCall(String(req.headers["x-amz-target"] ?? "")) : undefined;
      if (service) {
        return void answerJsonCall(res, Buffer.concat(chunks).toString("utf8"), service).catch(
          (err: unknown) => {
            log(`${service.name} failed: ${err instanceof Error ? err.message : String(err)}`);
            if (!res.headersSent) awsError(res, 500, service.fault[0], service.fault[1]);
          },
        );
      }
      if (!match?.[1]) return awsError(res, 404, "UnknownOperationException", "Unknown operation");
      // A full ARN or a name with a qualifier names the same local function.
      const name =
        decodeURIComponent(match[1])
          .replace(/^arn:aws:lambda:[^:]*:[^:]*:function:/, "")
          .split(":")[0] ?? "";
      const type = String(req.headers["x-amz-invocation-type"] ?? "RequestResponse");
      const fn = functions.get(name);
      if (!fn) return awsError(res, 404, "ResourceNotFoundException", `Function not found: ${name}`);
      const limit = type === "Event" ? MAX_EVENT_PAYLOAD : MAX_SYNC_PAYLOAD;
      if (size > limit)
        return awsError(res, 413, "RequestTooLargeException", `Request must be smaller than ${limit} bytes`);
      let payload: unknown;
      try {
        const text = Buffer.concat(chunks).toString("utf8");
        payload = text === "" ? {} : JSON.parse(text);
      } catch {
        return awsError(res, 400, "InvalidRequestContentException", "Could not parse request body into json");
      }
      void handle(type, name, fn, payload).catch((err: unknown) => {
        log(`invoke ${name} failed: ${err instanceof Error ? err.message : String(err)}`);
        if (!res.headersSent)
          awsError(res, 500, "ServiceException", "the local Lambda could not take the invocation");
      });
    });

    async function handle(type: string, name: string, fn: LocalFunction, payload: unknown): Promise<void> {
      if (type === "Event") {
        try {
          await invoker.enqueue(name, payload);
        } catch (err) {
          if (err instanceof UnknownFunctionError)
            return awsError(res, 404, "ResourceNotFoundException", err.message);
          throw err;
        }
        res.writeHead(202, { "content-length": "0" }).end();
        return;
      }
      if (type !== "RequestResponse")
        return awsError(res, 400, "InvalidParameterValueException", `unsupported invocation type ${type}`);
      try {
        const value = await fn.invoke(payload);
        send(res, 200, { "x-amz-executed-version": "$LATEST" }, value ?? null);
      } catch (err) {
        if (!(err instanceof InvocationError)) throw err;
        send(
          res,
          200,
          { "x-amz-executed-version": "$LATEST", "x-amz-function-error": "Unhandled" },
          {
            errorType: err.payload.errorType,
            errorMessage: err.payload.errorMessage,
            trace: err.payload.trace ?? [],
          },
        );
      }
    }
  });
}

/** A call to one of the AWS services the local Lambda API address also answers. */
interface ServiceCall {
  name: string;
  run: (body: unknown) => Promise<unknown>;
  /** The caller's error `err` is, as AWS types it; undefined for the service's own faults. */
  refusal: (err: unknown) => { type: string; message: string } | undefined;
  /** What a fault of the service answers (500). */
  fault: [type: string, message: string];
}

/**
 * Answers one call of an AWS JSON-protocol service: a body that is not JSON, or an error of `run` that
 * `refusal` names, is the caller's 400; anything else it throws is the service's own fault.
 */
async function answerJsonCall(res: ServerResponse, text: string, call: ServiceCall): Promise<void> {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return awsError(res, 400, "SerializationException", "the request body is not JSON");
  }
  let answer: unknown;
  try {
    answer = await call.run(body);
  } catch (err) {
    const refused = call.refusal(err);
    if (!refused) throw err;
    return awsError(res, 400, refused.type, refused.message);
  }
  send(res, 200, {}, answer);
}

function send(res: ServerResponse, status: number, headers: Record<string, string>, body: unknown): void {
  const text = JSON.stringify(body);
  res
    .writeHead(status, {
      ...headers,
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(text)),
    })
    .end(text);
}

function awsError(res: ServerResponse, status: number, type: string, message: string): void {
  send(res, status, { "x-amzn-errortype": type }, { __type: type, Type: "User", message });
}
