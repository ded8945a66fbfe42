import type { FanoutStarter } from "../../core/fanout/ports.ts";
import { AwsRequestError, SignedJsonClient } from "./signed-request.ts";

const START_TIMEOUT_MS = 10_000;

/**
 * Starts executions of the fan-out state machine with Step Functions' StartExecution: one signed JSON
 * POST (`SignedJsonClient`; the local stack answers the same operation beside its Lambda API and runs
 * the definition under aws-local-stepfunctions). Execution names are unique per image import: a start
 * that Step Functions finds already running (a retried call whose first answer was lost, same input)
 * succeeds, as StartExecution itself answers for a Standard workflow.
 */
export class StepFunctionsStarter implements FanoutStarter {
  private readonly client: SignedJsonClient;

  constructor(
    private readonly stateMachineArn: string,
    region: string,
    endpoint?: string,
  ) {
    this.client = new SignedJsonClient({
      service: "states",
      region,
      endpoint,
      timeoutMs: START_TIMEOUT_MS,
      describe: `Step Functions StartExecution of ${stateMachineArn}`,
    });
  }

  async start(name: string, input: { imageId: string }): Promise<void> {
    try {
      await this.client.post(
        "/",
        { "content-type": "application/x-amz-json-1.0", "x-amz-target": "AWSStepFunctions.StartExecution" },
        JSON.stringify({ stateMachineArn: this.stateMachineArn, name, input: JSON.stringify(input) }),
        [200],
      );
    } catch (err) {
      if (err instanceof AwsRequestError && err.type === "ExecutionAlreadyExists") return;
      throw err;
    }
  }
}
