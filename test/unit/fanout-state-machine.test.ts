import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { describe, expect, it } from "vitest";

// asl-validator ships CommonJS without types.
type Validation = { isValid: boolean; errorsText: (separator?: string) => string };
const aslValidator = createRequire(import.meta.url)("asl-validator") as (definition: unknown) => Validation;

const FILE = path.resolve(import.meta.dirname, "../../infra/stepfunctions/fanout.asl.json");
const text = readFileSync(FILE, "utf8");
/** The placeholders serverless.yml fills with DefinitionSubstitutions. */
const PLACEHOLDERS = ["FanoutControlFunctionArn", "FanoutHashFunctionArn", "FanoutWorkerFunctionArn"];
const LAMBDA_SERVICE_ERRORS = [
  "Lambda.AWSLambdaException",
  "Lambda.SdkClientException",
  "Lambda.ServiceException",
  "Lambda.TooManyRequestsException",
];

type State = {
  Type: string;
  Resource?: string;
  Next?: string;
  End?: boolean;
  Default?: string;
  Choices?: { Next: string }[];
  Retry?: { ErrorEquals: string[] }[];
  Catch?: { ErrorEquals: string[]; Next: string; ResultPath?: string }[];
  Parameters?: Record<string, unknown>;
  ItemProcessor?: { StartAt: string; States: Record<string, State> };
  Branches?: { StartAt: string; States: Record<string, State> }[];
  MaxConcurrencyPath?: string;
  OutputPath?: string;
  ResultSelector?: Record<string, string>;
  ResultPath?: string | null;
};
type Definition = { StartAt: string; States: Record<string, State> };

/** The definition as deployed: placeholders replaced with function ARNs. */
function substituted(source = text): Definition {
  return JSON.parse(
    source.replace(
      /\$\{(\w+)\}/g,
      (_, name: string) => `arn:aws:lambda:us-east-1:123456789012:function:hangar-test-${name}`,
    ),
  ) as Definition;
}

/** Every state, the Map's and the Parallel's inner ones included, with its name. */
function allStates(states: Record<string, State>): [string, State][] {
  return Object.entries(states).flatMap(([name, s]) => [
    [name, s] as [string, State],
    ...(s.ItemProcessor ? allStates(s.ItemProcessor.States) : []),
    ...(s.Branches ?? []).flatMap((b) => allStates(b.States)),
  ]);
}

describe("fan-out state machine definition", () => {
  const definition = substituted();
  const states = allStates(definition.States);

  it("is valid Amazon States Language (asl-validator), as deployed", () => {
    const result = aslValidator(definition);
    expect(result.errorsText("\n")).toBe("");
    expect(result.isValid).toBe(true);
  });

  it("is refused by the validator when a transition points nowhere", () => {
    const broken = substituted(text.replace('"Next": "UploadHashLink"', '"Next": "Nowhere"'));
    expect(aslValidator(broken).isValid).toBe(false);
  });

  it("names only the placeholders serverless.yml substitutes", () => {
    const names = [...new Set([...text.matchAll(/\$\{(\w+)\}/g)].map((m) => m[1]))].sort();
    expect(names).toEqual(PLACEHOLDERS);
  });

  it("plans, then in parallel converts ranges in a Map, completes and hashes the stored image in a loop, beside the upload's own chain; finishes", () => {
    const top = definition.States;
    expect(definition.StartAt).toBe("Plan");
    expect(top.Plan?.Next).toBe("Import");
    expect(top.Import?.Type).toBe("Parallel");
    expect(top.Import?.Next).toBe("Finish");
    const [stored, upload] = top.Import?.Branches ?? [];
    const s = stored?.States ?? {};
    expect(stored?.StartAt).toBe("Convert");
    expect(s.Convert?.Type).toBe("Map");
    expect(s.Convert?.MaxConcurrencyPath).toBe("$.plan.workers");
    expect(s.Convert?.Next).toBe("Complete");
    expect(s.Complete?.Next).toBe("StartHash");
    expect(s.StartHash?.Next).toBe("HashLink");
    expect(s.HashLink?.Next).toBe("Hashed?");
    expect(s["Hashed?"]?.Choices?.map((c) => c.Next)).toEqual(["Stored"]);
    expect(s["Hashed?"]?.Default).toBe("HashLink");
    expect(s.Stored).toMatchObject({ OutputPath: "$.hash", End: true });
    // The upload's chain runs only when the plan says so; either way the branch ends with its digests.
    const u = upload?.States ?? {};
    expect(upload?.StartAt).toBe("HashUpload?");
    expect(u["HashUpload?"]?.Choices?.map((c) => c.Next)).toEqual(["StartUploadHash"]);
    // A plan without the flag (from older control code) runs no upload chain rather than failing.
    expect(JSON.stringify(u["HashUpload?"]?.Choices)).toContain('"IsPresent":true');
    expect(u["HashUpload?"]?.Default).toBe("UploadNotHashed");
    expect(u.UploadNotHashed).toMatchObject({ OutputPath: "$.uploadHash", End: true });
    expect(u.StartUploadHash?.Next).toBe("UploadHashLink");
    expect(u.UploadHashLink?.Parameters).toMatchObject({ chain: "upload" });
    expect(u.UploadHashLink?.Next).toBe("UploadHashed?");
    expect(u["UploadHashed?"]?.Choices?.map((c) => c.Next)).toEqual(["UploadHashed"]);
    expect(u["UploadHashed?"]?.Default).toBe("UploadHashLink");
    expect(u.UploadHashed).toMatchObject({ OutputPath: "$.uploadHash", End: true });
    // Only the two chains' digests leave the Parallel, for Finish to compare and record.
    expect(top.Import?.ResultSelector).toEqual({ "stored.$": "$[0].digests", "upload.$": "$[1].digests" });
    expect(top.Import?.ResultPath).toBe("$.digests");
    expect(top.Finish?.Parameters).toMatchObject({
      "digests.$": "$.digests.stored",
      "uploadDigests.$": "$.digests.upload",
    });
    expect(top.Finish?.End).toBe(true);
    expect(top.Cleanup?.Next).toBe("Failed");
    expect(top.Failed?.Type).toBe("Fail");
  });

  it("retries every Task on Lambda service errors only", () => {
    const tasks = states.filter(([, st]) => st.Type === "Task");
    expect(tasks.map(([name]) => name).sort()).toEqual([
      "Cleanup",
      "Complete",
      "ConvertRange",
      "Finish",
      "HashLink",
      "Plan",
      "UploadHashLink",
    ]);
    for (const [name, st] of tasks) {
      expect({ name, retried: st.Retry?.flatMap((r) => r.ErrorEquals).sort() }).toEqual({
        name,
        retried: LAMBDA_SERVICE_ERRORS,
      });
    }
  });

  it("sends every failure outside Cleanup to Cleanup, keeping the input and the error", () => {
    for (const [name, st] of Object.entries(definition.States)) {
      if (st.Type !== "Task" && st.Type !== "Map" && st.Type !== "Parallel") continue;
      const expected = name === "Cleanup" ? "Failed" : "Cleanup";
      expect({ name, catch: st.Catch }).toEqual({
        name,
        catch: [
          {
            ErrorEquals: ["States.ALL"],
            ResultPath: name === "Cleanup" ? "$.cleanupError" : "$.error",
            Next: expected,
          },
        ],
      });
    }
    // A range's or a link's failure reaches Cleanup through the Parallel's Catch (a branch's states
    // cannot leave it).
    const inner = states.filter(([name]) => !(name in definition.States));
    expect(inner.length).toBeGreaterThan(0);
    for (const [name, st] of inner) expect({ name, catch: st.Catch }).toEqual({ name, catch: undefined });
  });
});
