import { lambdaHandler } from "../adapters/observability/lambda.ts";
import { loadFanoutConfig } from "../config.ts";
import { createFanoutControlFunction } from "../roots/fanout-control.ts";

const fn = createFanoutControlFunction(loadFanoutConfig(process.env));

/** A step of the fan-out state machine (infra/stepfunctions/fanout.asl.json; docs/scale.md). */
export const handler = lambdaHandler(
  (event: Parameters<typeof fn.handle>[0]) => fn.handle(event),
  (event) => ({ image_id: typeof event?.imageId === "string" ? event.imageId : undefined }),
);
