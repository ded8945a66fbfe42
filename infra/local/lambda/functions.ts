/**
 * The functions the local stack runs, as serverless.yml declares them: the handler bundle each one runs,
 * its timeout and memory, and how often Lambda retries an asynchronous invocation that failed.
 */
export interface FunctionSpec {
  /** The key under `functions:` in serverless.yml. */
  key: string;
  /** The entry point `functions/handlers/<handler>.ts`, built to `<name>/index.mjs`. */
  handler: string;
  timeoutSeconds: number;
  memoryMb: number;
  /** `maximumRetryAttempts` for asynchronous invocations (Lambda's default is 2). */
  maximumRetryAttempts: number;
}

// Kept in step with serverless.yml by hand (test/unit/local-functions.test.ts compares them).
export const FUNCTIONS = {
  api: { key: "api", handler: "api", timeoutSeconds: 29, memoryMb: 1024, maximumRetryAttempts: 2 },
  importer: {
    key: "importer",
    handler: "importer",
    timeoutSeconds: 900,
    memoryMb: 3008,
    maximumRetryAttempts: 2,
  },
  webDownload: {
    key: "webDownload",
    handler: "web-download",
    timeoutSeconds: 900,
    memoryMb: 1024,
    maximumRetryAttempts: 0,
  },
  sweeper: {
    key: "sweeper",
    handler: "sweeper",
    timeoutSeconds: 300,
    memoryMb: 512,
    maximumRetryAttempts: 0,
  },
  reconciler: {
    key: "reconciler",
    handler: "reconciler",
    timeoutSeconds: 900,
    memoryMb: 512,
    maximumRetryAttempts: 0,
  },
  fanoutControl: {
    key: "fanoutControl",
    handler: "fanout-control",
    timeoutSeconds: 300,
    memoryMb: 512,
    maximumRetryAttempts: 0,
  },
  fanoutWorker: {
    key: "fanoutWorker",
    handler: "fanout-worker",
    timeoutSeconds: 900,
    memoryMb: 3008,
    maximumRetryAttempts: 0,
  },
  fanoutHash: {
    key: "fanoutHash",
    handler: "fanout-hash",
    timeoutSeconds: 900,
    memoryMb: 1769,
    maximumRetryAttempts: 0,
  },
} as const satisfies Record<string, FunctionSpec>;

export type FunctionKey = keyof typeof FUNCTIONS;

/** serverless.yml's service name and the local stage: functions are named `<service>-<stage>-<key>`. */
export const LOCAL_SERVICE = "hangar";
export const LOCAL_STAGE = "local";

/** The deployed name of a function, as the Lambda API knows it (e.g. `hangar-local-webDownload`). */
export function functionName(key: FunctionKey): string {
  return `${LOCAL_SERVICE}-${LOCAL_STAGE}-${key}`;
}

/** The API Gateway routes serverless.yml gives the api function, in the order API Gateway prefers them. */
export const API_ROUTES = [
  "GET /",
  "GET /versions",
  "GET /openapi.json",
  "OPTIONS /v2/{proxy+}",
  "ANY /v2/{proxy+}",
  "ANY /{proxy+}",
] as const;
