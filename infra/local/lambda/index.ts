import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createApiGateway } from "./api-gateway.ts";
import { AsyncInvoker, type QueuedInvocation } from "./async-invoker.ts";
import { bundlePath } from "./build.ts";
import { FUNCTIONS, type FunctionKey, functionName } from "./functions.ts";
import { describeFinishedImport } from "./import-line.ts";
import { createInvokeApi } from "./invoke-api.ts";
import { LocalFunction } from "./runtime.ts";
import { describeS3Event } from "./s3-events.ts";
import { LocalStepFunctions } from "./step-functions.ts";

/** The bus the local functions publish lifecycle events to. */
export const LOCAL_EVENT_BUS = "hangar-local";

/** Where the local stack's lifecycle events are kept, one JSON object per line. */
export const eventsFile = (home: string) => join(home, "events.jsonl");

export interface LocalLambdaOptions {
  home: string;
  /** Built bundles: `<bundlesDir>/<handler>/index.mjs`. */
  bundlesDir: string;
  /** What serverless.yml's `provider.environment` gives every function, with local endpoints. */
  env: Record<string, string>;
  /** Variables for one function only (serverless.yml's `functions.<key>.environment`). */
  functionEnv?: Partial<Record<FunctionKey, Record<string, string>>>;
  /** Credentials and region the functions' SDK clients find in their environment, as in Lambda. */
  credentials: { accessKeyId: string; secretAccessKey: string };
  region: string;
  apiPort: number;
  retryDelaysMs: readonly number[];
  log: (line: string) => void;
}

/**
 * Lambda's stand-in: one `LocalFunction` per function of serverless.yml, an HTTP API that turns requests
 * into payload-2.0 events for the api function, the Lambda Invoke API on loopback, and the asynchronous
 * invocation queue (retries, failure destination) that storage events and `Event` invocations take.
 */
export class LocalLambda {
  readonly functions = new Map<string, LocalFunction>();
  readonly invoker: AsyncInvoker;
  /** The fan-out state machine, run locally (StartExecution on the Invoke API's address). */
  readonly stepFunctions: LocalStepFunctions;
  private apiServer: Server | undefined;
  private invokeServer: Server | undefined;
  /** The Invoke API's address (`http://127.0.0.1:<port>`); known once the servers listen. */
  lambdaEndpoint = "";

  constructor(private readonly opts: LocalLambdaOptions) {
    this.invoker = new AsyncInvoker({
      queueDir: join(opts.home, "async-invocations"),
      failedDir: join(opts.home, "failed-events"),
      functions: new Map(
        [...Object.keys(FUNCTIONS)].map((key) => [
          functionName(key as FunctionKey),
          {
            invoke: (event: unknown) => this.fn(key as FunctionKey).invoke(event),
            maximumRetryAttempts: FUNCTIONS[key as FunctionKey].maximumRetryAttempts,
          },
        ]),
      ),
      retryDelaysMs: opts.retryDelaysMs,
      log: opts.log,
      describe: describeInvocation,
    });
    this.stepFunctions = new LocalStepFunctions({
      region: opts.region,
      invoke: (key, event) => this.fn(key).invoke(event),
      log: opts.log,
    });
  }

  /** The local function for a key of serverless.yml's `functions:`. */
  fn(key: FunctionKey): LocalFunction {
    const found = this.functions.get(functionName(key));
    if (!found) throw new Error(`the local Lambda is not started (${key})`);
    return found;
  }

  /**
   * Listens on loopback (Invoke API on a free port, HTTP API on `apiPort`), starts the api function's
   * runtime, and delivers invocations left queued by an earlier run.
   */
  async start(): Promise<void> {
    this.invokeServer = createInvokeApi(
      this.functions,
      this.invoker,
      this.opts.log,
      { file: eventsFile(this.opts.home), region: this.opts.region },
      this.stepFunctions,
    );
    await listen(this.invokeServer, 0);
    this.lambdaEndpoint = `http://127.0.0.1:${(this.invokeServer.address() as AddressInfo).port}`;

    for (const key of Object.keys(FUNCTIONS) as FunctionKey[]) {
      const spec = FUNCTIONS[key];
      const name = functionName(key);
      this.functions.set(
        name,
        new LocalFunction({
          spec,
          name,
          bundle: bundlePath(this.opts.bundlesDir, spec.handler),
          env: this.environment(key),
          log: (line) => {
            this.opts.log(line);
            const finished = describeFinishedImport(line);
            if (finished) this.opts.log(finished);
          },
        }),
      );
    }
    this.apiServer = createApiGateway((event) => this.fn("api").invoke(event), this.opts.log);
    await listen(this.apiServer, this.opts.apiPort);
    // Warm the functions every request and upload needs, so the first one does not pay their start.
    await Promise.all([this.fn("api").warm(), this.fn("importer").warm()]);
    await this.invoker.start();
  }

  /** Stops the servers, waits up to `graceMs` for running invocations, then stops every runtime. */
  async stop(graceMs: number): Promise<void> {
    await Promise.all([close(this.apiServer), close(this.invokeServer)]);
    await this.invoker.stop(graceMs);
    await this.stepFunctions.stop(graceMs);
    await Promise.all([...this.functions.values()].map((f) => f.stop()));
  }

  /** A function's whole environment: Lambda's own variables, the provider's, then the function's. */
  private environment(key: FunctionKey): Record<string, string> {
    const spec = FUNCTIONS[key];
    const name = functionName(key);
    const lambda: Record<string, string> = {
      AWS_LAMBDA_FUNCTION_NAME: name,
      AWS_LAMBDA_FUNCTION_VERSION: "$LATEST",
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(spec.memoryMb),
      AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/${name}`,
      AWS_REGION: this.opts.region,
      AWS_DEFAULT_REGION: this.opts.region,
      AWS_ACCESS_KEY_ID: this.opts.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: this.opts.credentials.secretAccessKey,
      AWS_EXECUTION_ENV: "AWS_Lambda_nodejs22.x",
      TZ: "UTC",
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      // Lambda runs Node 22; on an older local Node the SDK's support warning is noise, if it was silenced.
      ...pick(process.env, "AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"),
      // serverless.yml's bus; PutEvents goes to the stand-in beside the Invoke API (events.jsonl).
      HANGAR_EVENT_BUS: LOCAL_EVENT_BUS,
      HANGAR_EVENTS_ENDPOINT: this.lambdaEndpoint,
    };
    // serverless.yml's functions.<key>.environment: the api's web-download jobs and the sweeper's
    // re-drives go through the Lambda API.
    const own: Record<string, string> =
      key === "api"
        ? {
            HANGAR_WEB_DOWNLOAD_FUNCTION: functionName("webDownload"),
            HANGAR_LAMBDA_ENDPOINT: this.lambdaEndpoint,
          }
        : key === "sweeper"
          ? {
              HANGAR_IMPORTER_FUNCTION: functionName("importer"),
              HANGAR_LAMBDA_ENDPOINT: this.lambdaEndpoint,
            }
          : key === "importer"
            ? {
                // Images above HANGAR_FANOUT_THRESHOLD go to the local fan-out state machine.
                HANGAR_FANOUT_STATE_MACHINE: this.stepFunctions.stateMachineArn,
                HANGAR_STEPFUNCTIONS_ENDPOINT: this.lambdaEndpoint,
              }
            : {};
    return { ...lambda, ...this.opts.env, ...own, ...this.opts.functionEnv?.[key] };
  }
}

/** Storage events are logged by their objects (`storage event received: ObjectCreated:Put bucket/key`). */
function describeInvocation(entry: QueuedInvocation): { label: string; summary: string } {
  const s3 = describeS3Event(entry.event);
  if (s3 !== undefined) return { label: "storage event", summary: s3 };
  return { label: "async invocation", summary: `${entry.functionName} ${entry.id}` };
}

function pick(env: NodeJS.ProcessEnv, name: string): Record<string, string> {
  const value = env[name];
  return value === undefined ? {} : { [name]: value };
}

function listen(server: Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, host: "127.0.0.1" }, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

async function close(server: Server | undefined): Promise<void> {
  if (!server?.listening) return;
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    // Keep-alive connections would hold close() open for their idle timeout.
    server.closeAllConnections();
  });
}
