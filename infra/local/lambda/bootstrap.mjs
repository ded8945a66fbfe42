// The local stand-in for a Lambda runtime: one child process per function, started by
// infra/local/lambda/runtime.ts with the function's own environment. It loads the built bundle once
// (the "init" phase), then serves invocations sent over IPC with a Lambda-like context object.
//
//   node bootstrap.mjs <bundle.mjs> <functionName> <timeoutSeconds> <memoryMb>
import { pathToFileURL } from "node:url";

const [bundle, functionName, timeoutArg, memoryArg] = process.argv.slice(2);
if (!bundle || !functionName || !process.send) {
  process.stderr.write(
    "usage: node bootstrap.mjs <bundle.mjs> <functionName> <timeoutSeconds> <memoryMb> (IPC child only)\n",
  );
  process.exit(2);
}
const timeoutSeconds = Number(timeoutArg);
const memoryMb = Number(memoryArg);

/** Lambda's error payload: what the Invoke API and the async retry log show. */
function errorPayload(err) {
  if (err instanceof Error) {
    return {
      errorType: err.name || "Error",
      errorMessage: err.message,
      trace: String(err.stack ?? "").split("\n"),
    };
  }
  return { errorType: "Error", errorMessage: String(err), trace: [] };
}

function send(message) {
  // The parent may be gone (stack stopped); there is nobody left to answer.
  if (process.connected) process.send(message);
}

// The parent going away (stop, crash) ends this runtime too: no orphan keeps serving.
process.on("disconnect", () => process.exit(0));

let handler;
try {
  const mod = await import(pathToFileURL(bundle).href);
  handler = mod.handler;
  if (typeof handler !== "function") throw new TypeError(`${bundle} exports no function named handler`);
} catch (err) {
  send({ type: "init-error", error: { ...errorPayload(err), errorType: "Runtime.ImportModuleError" } });
  process.exit(1);
}

// Lambda fails the invocation whose code threw outside the handler's promise, then restarts the runtime.
process.on("uncaughtException", (err) => {
  process.stderr.write(`uncaught exception: ${err instanceof Error ? (err.stack ?? err.message) : err}\n`);
  process.exit(129);
});
process.on("unhandledRejection", (err) => {
  process.stderr.write(`unhandled rejection: ${err instanceof Error ? (err.stack ?? err.message) : err}\n`);
  process.exit(128);
});

process.on("message", async (message) => {
  if (message?.type !== "invoke") return;
  const { id, requestId, event, deadline } = message;
  const context = {
    awsRequestId: requestId,
    functionName,
    functionVersion: "$LATEST",
    invokedFunctionArn: `arn:aws:lambda:${process.env.AWS_REGION}:000000000000:function:${functionName}`,
    memoryLimitInMB: String(memoryMb),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: `local/${process.pid}`,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    timeoutSeconds,
  };
  try {
    const value = await handler(event, context);
    send({ type: "result", id, ok: true, value: value === undefined ? null : value });
  } catch (err) {
    send({ type: "result", id, ok: false, error: errorPayload(err) });
  }
});

send({ type: "ready" });
