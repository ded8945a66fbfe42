import { AwsRequestError, SignedJsonClient } from "./signed-request.ts";

/** Longest wait for the Lambda API to accept a job; an asynchronous invocation is queued, not run. */
const INVOKE_TIMEOUT_MS = 10_000;

/** The Lambda API refused the job. */
export { AwsRequestError as LambdaInvokeError };

/**
 * Invokes one Lambda function asynchronously (InvocationType Event) through the Lambda API (AWS's, or the
 * local stack's): Lambda queues the payload and answers 202; the function then runs with its own timeout,
 * retries and failure destination. One signed POST of the Invoke operation (`SignedJsonClient`), not
 * `@aws-sdk/client-lambda`, which was 130 KiB of the API bundle for this one call.
 */
export class LambdaAsyncInvoker {
  private readonly client: SignedJsonClient;

  constructor(
    private readonly functionName: string,
    region: string,
    /** The Lambda API's address when it is not AWS's (the local stack's stand-in). */
    endpoint?: string,
  ) {
    this.client = new SignedJsonClient({
      service: "lambda",
      region,
      endpoint,
      timeoutMs: INVOKE_TIMEOUT_MS,
      describe: `Lambda Invoke (Event) of ${functionName}`,
    });
  }

  /** Queues `payload` (as JSON) for the function; resolves once Lambda has accepted it. */
  async invoke(payload: unknown): Promise<void> {
    await this.client.post(
      `/2015-03-31/functions/${encodeURIComponent(this.functionName)}/invocations`,
      { "content-type": "application/json", "x-amz-invocation-type": "Event" },
      JSON.stringify(payload),
      [202],
    );
  }
}
