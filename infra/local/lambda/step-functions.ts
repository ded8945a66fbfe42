import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { StateMachineDefinition } from "aws-local-stepfunctions";
import { FUNCTIONS, type FunctionKey, functionName, LOCAL_SERVICE, LOCAL_STAGE } from "./functions.ts";
import "./promise-with-resolvers.ts";
import { InvocationError } from "./runtime.ts";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
/** The definition serverless.yml deploys, run here as it is. */
export const FANOUT_DEFINITION = join(repoRoot, "infra", "stepfunctions", "fanout.asl.json");

/** The definition's placeholders and the functions serverless.yml (infra/cloudformation/fanout.yml) fills in. */
const PLACEHOLDERS: Record<string, FunctionKey> = {
  FanoutControlFunctionArn: "fanoutControl",
  FanoutWorkerFunctionArn: "fanoutWorker",
  FanoutHashFunctionArn: "fanoutHash",
};

/** The local account the stand-in's ARNs carry. */
const ACCOUNT = "000000000000";

/** The local state machine's ARN, as the importer is given it (`HANGAR_FANOUT_STATE_MACHINE`). */
export const localStateMachineArn = (region: string) =>
  `arn:aws:states:${region}:${ACCOUNT}:stateMachine:${LOCAL_SERVICE}-${LOCAL_STAGE}-fanout`;

/** A request Step Functions refuses, with its error type (`InvalidName`, `ExecutionAlreadyExists`, …). */
export class StepFunctionsError extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
    this.name = type;
  }
}

type Invoke = (key: FunctionKey, event: unknown) => Promise<unknown>;
type TaskHandler = (input: unknown) => Promise<never>;

interface Execution {
  name: string;
  input: string;
  startDate: Date;
  done: Promise<void>;
  abort(): void;
}

/**
 * Step Functions' StartExecution, as the local stack answers it: the fan-out definition
 * (infra/stepfunctions/fanout.asl.json, the file serverless.yml deploys) runs under
 * aws-local-stepfunctions, each Task invoking the **built** function its placeholder names through the
 * local Lambda runtime, synchronously, as a Lambda task does. A function's error reaches the state machine
 * as AWS gives it: `Error` the function's `errorType`, `Cause` the JSON `{errorMessage, errorType, trace}`.
 */
export class LocalStepFunctions {
  private readonly definition: StateMachineDefinition;
  private readonly tasks: Record<string, TaskHandler> = {};
  private readonly executions = new Map<string, Execution>();
  readonly stateMachineArn: string;

  constructor(
    private readonly opts: { region: string; invoke: Invoke; log: (line: string) => void; file?: string },
  ) {
    const text = readFileSync(opts.file ?? FANOUT_DEFINITION, "utf8");
    const arn = (key: FunctionKey) =>
      `arn:aws:lambda:${opts.region}:${ACCOUNT}:function:${functionName(key)}`;
    this.definition = JSON.parse(
      text.replace(/\$\{(\w+)\}/g, (whole, name: string) => {
        const key = PLACEHOLDERS[name];
        return key ? arn(key) : whole;
      }),
    ) as StateMachineDefinition;
    const byArn = new Map(Object.values(PLACEHOLDERS).map((key) => [arn(key), key]));
    this.mapTasks(this.definition.States as Record<string, StateShape>, byArn);
    this.stateMachineArn = localStateMachineArn(opts.region);
  }

  /** Every Task state, in the Map's processor and the Parallel's branches too, invokes the function its Resource names. */
  private mapTasks(states: Record<string, StateShape>, byArn: Map<string, FunctionKey>): void {
    for (const [name, state] of Object.entries(states)) {
      if (state.Type === "Task") {
        const key = byArn.get(String(state.Resource));
        if (!key || !(key in FUNCTIONS)) throw new Error(`state ${name} names no local function`);
        this.tasks[name] = (input) => this.invokeTask(key, input);
      }
      if (state.ItemProcessor) this.mapTasks(state.ItemProcessor.States, byArn);
      for (const branch of state.Branches ?? []) this.mapTasks(branch.States, byArn);
    }
  }

  private async invokeTask(key: FunctionKey, input: unknown): Promise<never> {
    try {
      return (await this.opts.invoke(key, input)) as never;
    } catch (err) {
      if (!(err instanceof InvocationError)) throw err;
      const { errorType, errorMessage, trace } = err.payload;
      throw new StepFunctionsError(
        errorType,
        JSON.stringify({ errorMessage, errorType, trace: trace ?? [] }),
      );
    }
  }

  /** StartExecution's request and answer (`executionArn`, `startDate` in seconds). */
  async startExecution(body: unknown): Promise<{ executionArn: string; startDate: number }> {
    const { stateMachineArn, name, input } = (body ?? {}) as Record<string, unknown>;
    if (stateMachineArn !== this.stateMachineArn) {
      throw new StepFunctionsError(
        "StateMachineDoesNotExist",
        `State Machine Does Not Exist: '${String(stateMachineArn)}'`,
      );
    }
    if (typeof name !== "string" || !/^[A-Za-z0-9_-]{1,80}$/.test(name)) {
      throw new StepFunctionsError("InvalidName", `Invalid Name: '${String(name)}'`);
    }
    const text = typeof input === "string" ? input : "{}";
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new StepFunctionsError("InvalidExecutionInput", "Invalid execution input: not JSON");
    }
    const executionArn = `${this.stateMachineArn.replace(":stateMachine:", ":execution:")}:${name}`;
    const known = this.executions.get(name);
    if (known) {
      // Standard workflows: the same name and input again is the same execution (idempotent start).
      if (known.input !== text)
        throw new StepFunctionsError("ExecutionAlreadyExists", `Execution Already Exists: '${executionArn}'`);
      return { executionArn, startDate: known.startDate.getTime() / 1000 };
    }
    const startDate = new Date();
    const { StateMachine } = await import("aws-local-stepfunctions");
    const run = new StateMachine(this.definition).run(parsed as never, {
      context: {
        Execution: {
          Id: executionArn,
          Name: name,
          Input: parsed as never,
          StartTime: startDate.toISOString(),
        },
      },
      overrides: { taskResourceLocalHandlers: this.tasks },
    });
    this.opts.log(`fan-out execution ${name} started`);
    const done = run.result.then(
      () => this.opts.log(`fan-out execution ${name} succeeded`),
      (err: unknown) =>
        this.opts.log(
          `fan-out execution ${name} failed: ${err instanceof Error ? err.message : String(err)}`,
        ),
    );
    this.executions.set(name, { name, input: text, startDate, done, abort: run.abort });
    return { executionArn, startDate: startDate.getTime() / 1000 };
  }

  /** Waits up to `graceMs` for running executions, then aborts the rest. */
  async stop(graceMs: number): Promise<void> {
    const all = [...this.executions.values()];
    let timer: NodeJS.Timeout | undefined;
    const waited = await Promise.race([
      Promise.all(all.map((e) => e.done)).then(() => true),
      new Promise<false>((r) => {
        timer = setTimeout(() => r(false), graceMs);
      }),
    ]);
    clearTimeout(timer);
    if (!waited) for (const e of all) e.abort();
  }
}

interface StateShape {
  Type: string;
  Resource?: unknown;
  ItemProcessor?: { States: Record<string, StateShape> };
  Branches?: { States: Record<string, StateShape> }[];
}
