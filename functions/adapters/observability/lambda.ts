import type { Context } from "aws-lambda";
import { addLambdaContext } from "../log.ts";
import { mappingStacks } from "../stack-map.ts";
import { withContext } from "./context.ts";

/**
 * A Lambda handler with Hangar's observability around it: the invocation's Lambda context on every log
 * line, the work context (`request_id`, `image_id`) that `contextOf` finds in the event, and thrown errors
 * with stack traces that point at the sources.
 */
export function lambdaHandler<E, R>(
  handler: (event: E, context?: Context) => Promise<R>,
  contextOf?: (event: E) => { request_id?: string; image_id?: string },
) {
  return mappingStacks(async (event: E, context?: Context): Promise<R> => {
    addLambdaContext(context);
    return withContext(contextOf?.(event) ?? {}, () => handler(event, context));
  });
}
