import { describe, expect, it } from "vitest";
import type { FunctionKey } from "../../../infra/local/lambda/functions.ts";
import { InvocationError } from "../../../infra/local/lambda/runtime.ts";
import { LocalStepFunctions, localStateMachineArn } from "../../../infra/local/lambda/step-functions.ts";

// The local StartExecution: the deployed definition's Tasks invoke the local functions their placeholders
// name, and a function's error reaches the state machine as Lambda reports it. The functions are stubs here;
// test/integration/fanout.test.ts runs the built ones.

type Call = { key: FunctionKey; event: Record<string, unknown> };

function stand(handler: (call: Call) => unknown) {
  const calls: Call[] = [];
  const lines: string[] = [];
  const sfn = new LocalStepFunctions({
    region: "us-east-1",
    log: (l) => lines.push(l),
    invoke: async (key, event) => {
      const call = { key, event: event as Record<string, unknown> };
      calls.push(call);
      return handler(call);
    },
  });
  const finished = async (name: string) => {
    for (
      let i = 0;
      i < 200 && !lines.some((l) => l.startsWith(`fan-out execution ${name} `) && !l.endsWith("started"));
      i++
    )
      await new Promise((r) => setTimeout(r, 10));
    return lines.find((l) => l.startsWith(`fan-out execution ${name} `) && !l.endsWith("started"));
  };
  return { sfn, calls, lines, finished };
}

const start = (sfn: LocalStepFunctions, name: string, input = { imageId: "img" }) =>
  sfn.startExecution({
    stateMachineArn: localStateMachineArn("us-east-1"),
    name,
    input: JSON.stringify(input),
  });

/**
 * A fan-out of one range and one link, each step answered as the real functions answer; with
 * `hashUpload`, one link of the upload's own chain too.
 */
const answer =
  (hashUpload: boolean) =>
  ({ key, event }: Call): unknown => {
    if (key === "fanoutControl" && event.step === "plan")
      return {
        virtualSize: 10,
        partSize: 5,
        rangeBytes: 10,
        partsTotal: 2,
        uploadId: "u",
        workers: 1,
        ranges: [{ index: 0, offset: 0, length: 10, firstPart: 1, lastPart: 2 }],
        uploadSize: 7,
        hashUpload,
      };
    if (key === "fanoutHash" && event.chain === "upload")
      return { done: true, offset: 7, state: null, digests: { sha256: "s" } };
    if (key === "fanoutHash") return { done: true, offset: 10, state: null, digests: { md5: "m" } };
    return null;
  };
const happy = answer(false);

describe("the local Step Functions (StartExecution)", () => {
  it("runs the definition's Tasks on the functions their placeholders name, each given the execution's name", async () => {
    const s = stand(happy);
    const out = await start(s.sfn, "img-1");
    expect(out.executionArn).toBe(
      "arn:aws:states:us-east-1:000000000000:execution:hangar-local-fanout:img-1",
    );
    expect(await s.finished("img-1")).toBe("fan-out execution img-1 succeeded");
    expect(s.calls.map((c) => `${c.key}:${String(c.event.step)}`)).toEqual([
      "fanoutControl:plan",
      "fanoutWorker:convert",
      "fanoutControl:complete",
      "fanoutHash:hash",
      "fanoutControl:finish",
    ]);
    expect(new Set(s.calls.map((c) => c.event.execution))).toEqual(new Set(["img-1"]));
  });

  it("runs the upload's own chain in the Parallel's other branch, on the hash function, when the plan asks", async () => {
    const s = stand(answer(true));
    await start(s.sfn, "img-4");
    expect(await s.finished("img-4")).toBe("fan-out execution img-4 succeeded");
    const upload = s.calls.filter((c) => c.event.chain === "upload");
    expect(upload.map((c) => [c.key, c.event.uploadSize, c.event.execution])).toEqual([
      ["fanoutHash", 7, "img-4"],
    ]);
    expect(s.calls.at(-1)?.event).toMatchObject({
      step: "finish",
      digests: { md5: "m" },
      uploadDigests: { sha256: "s" },
    });
  });

  it("hands a function's error to Cleanup as Lambda reports it: Error the error type, Cause the JSON error", async () => {
    const s = stand((call) => {
      if (call.key === "fanoutWorker")
        throw new InvocationError({ errorType: "Hangar.UNSAFE_IMAGE", errorMessage: "bad cluster" }, "r1");
      return happy(call);
    });
    await start(s.sfn, "img-2");
    expect(await s.finished("img-2")).toMatch(/failed: .*The fan-out import failed/);
    const cleanup = s.calls.at(-1);
    expect(cleanup?.event.step).toBe("cleanup");
    const error = cleanup?.event.error as { Error: string; Cause: string };
    expect(error.Error).toBe("Hangar.UNSAFE_IMAGE");
    expect(JSON.parse(error.Cause)).toMatchObject({
      errorType: "Hangar.UNSAFE_IMAGE",
      errorMessage: "bad cluster",
    });
  });

  it("answers StartExecution as Step Functions does: the same name and input again is the same execution", async () => {
    const s = stand(happy);
    const first = await start(s.sfn, "img-3");
    expect(await start(s.sfn, "img-3")).toEqual(first);
    await expect(start(s.sfn, "img-3", { imageId: "other" })).rejects.toMatchObject({
      type: "ExecutionAlreadyExists",
    });
    await expect(start(s.sfn, "bad name!")).rejects.toMatchObject({ type: "InvalidName" });
    await expect(
      s.sfn.startExecution({
        stateMachineArn: "arn:aws:states:us-east-1:1:stateMachine:x",
        name: "n",
        input: "{}",
      }),
    ).rejects.toMatchObject({ type: "StateMachineDoesNotExist" });
    await s.finished("img-3");
    expect(s.calls.filter((c) => c.event.step === "plan")).toHaveLength(1);
  });
});
