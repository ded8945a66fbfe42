import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { ExecutionError, StateMachine, type StateMachineDefinition } from "aws-local-stepfunctions";
import { describe, expect, it } from "vitest";
import { type ChainAlgo, type HashChainState, hashLink } from "../../functions/core/fanout/hash-chain.ts";
import { type FanoutRange, planRanges } from "../../functions/core/fanout/plan.ts";
import "../../infra/local/lambda/promise-with-resolvers.ts";

// Runs the fan-out definition under aws-local-stepfunctions with in-memory stand-ins for the three
// functions: the states' wiring is what is under test (test/integration/fanout.test.ts runs the real ones). The stand-ins copy
// ranges into "parts" and the hash stand-in runs the real hash chain, so the result must be the
// image's bytes and node:crypto's digests. The real handlers, storage and records are not involved.

const FILE = path.resolve(import.meta.dirname, "../../infra/stepfunctions/fanout.asl.json");
const definition = JSON.parse(
  readFileSync(FILE, "utf8").replace(
    /\$\{(\w+)\}/g,
    (_, n: string) => `arn:aws:lambda:us-east-1:123456789012:function:hangar-test-${n}`,
  ),
) as StateMachineDefinition;

const MiB = 1024 * 1024;
const PART = 5 * MiB;
/** Deliberately not a multiple of any block or part size, so links and ranges cut differently. */
const LINK = 7 * MiB + 3;

type Step = { step: string; imageId: string; [k: string]: unknown };

/** One link of the real hash chain over `bytes`, as the hash function answers the state machine. */
async function link(bytes: Uint8Array, algos: ChainAlgo[], offset: number, state: HashChainState | null) {
  const length = Math.min(LINK, bytes.byteLength - offset);
  const body = bytes.subarray(offset, offset + length);
  const out = await hashLink({
    state: state ?? undefined,
    algos,
    offset,
    length,
    source: (async function* () {
      yield body;
    })(),
    last: offset + length === bytes.byteLength,
  });
  return (
    out.done
      ? { done: true, offset: out.bytes, state: null, digests: out.digests }
      : { done: false, offset: out.state.bytes, state: out.state }
  ) as never;
}

/**
 * A fan-out over `image` with stand-in handlers; `failRange` makes that range's worker throw. With
 * `upload`, the plan asks for the upload's own chain over those bytes, and `failUploadAt` makes its link
 * at that offset throw.
 */
function harness(
  image: Uint8Array,
  options: {
    failRange?: number;
    serviceErrorsOnce?: boolean;
    upload?: Uint8Array;
    failUploadAt?: number;
    /** The plan as control code older than the upload chain answered it: no `hashUpload`, no `uploadSize`. */
    olderPlan?: boolean;
  } = {},
) {
  const calls: Step[] = [];
  const parts = new Map<number, Uint8Array>();
  let stored: Uint8Array | undefined;
  let converting = 0;
  let maxConverting = 0;
  let flaky = options.serviceErrorsOnce ?? false;
  const record = (input: unknown) => {
    calls.push(input as Step);
    return input as Step & Record<string, never>;
  };
  const handlers = {
    Plan: (input: unknown) => {
      record(input);
      const plan = planRanges({ virtualSize: image.byteLength, rangeBytes: 2 * PART, partSize: PART });
      if (options.olderPlan) return { ...plan, uploadId: "upload-1", workers: 2 } as never;
      return {
        ...plan,
        ranges: plan.ranges as FanoutRange[],
        uploadId: "upload-1",
        workers: 2,
        uploadSize: options.upload?.byteLength ?? image.byteLength,
        hashUpload: options.upload !== undefined,
      } as never;
    },
    ConvertRange: async (input: unknown) => {
      const { range } = record(input) as unknown as { range: FanoutRange };
      if (flaky) {
        flaky = false;
        throw Object.assign(new Error("Rate exceeded"), { name: "Lambda.TooManyRequestsException" });
      }
      converting++;
      maxConverting = Math.max(maxConverting, converting);
      await new Promise((r) => setTimeout(r, 20));
      converting--;
      if (range.index === options.failRange)
        throw Object.assign(new Error("cannot read cluster"), { name: "Hangar.RangeFailed" });
      for (let p = range.firstPart; p <= range.lastPart; p++) {
        const start = (p - 1) * PART;
        parts.set(p, image.subarray(start, Math.min(start + PART, image.byteLength)));
      }
      return {};
    },
    Complete: (input: unknown) => {
      const { partsTotal } = record(input) as unknown as { partsTotal: number };
      stored = Buffer.concat(
        Array.from({ length: partsTotal }, (_, i) => parts.get(i + 1) ?? new Uint8Array(0)),
      );
      return {};
    },
    HashLink: async (input: unknown) => {
      const { offset, state, virtualSize } = record(input) as unknown as {
        offset: number;
        state: HashChainState | null;
        virtualSize: number;
      };
      if (!stored) throw new Error("hashing before completion");
      if (virtualSize !== stored.byteLength) throw new Error("the plan's size is not the stored object's");
      return link(stored, ["md5", "sha512"], offset, state);
    },
    UploadHashLink: async (input: unknown) => {
      const { offset, state, uploadSize, chain } = record(input) as unknown as {
        offset: number;
        state: HashChainState | null;
        uploadSize: number;
        chain: string;
      };
      const upload = options.upload;
      if (!upload || chain !== "upload" || uploadSize !== upload.byteLength) {
        throw new Error("an upload chain nobody planned");
      }
      await new Promise((r) => setTimeout(r, 5));
      if (offset === options.failUploadAt) {
        throw Object.assign(new Error("The upload's sha256 is x but the image declared upload_sha256 y."), {
          name: "Hangar.DIGEST_MISMATCH",
        });
      }
      return link(upload, ["sha256"], offset, state);
    },
    Finish: (input: unknown) => {
      record(input);
      return {};
    },
    Cleanup: (input: unknown) => {
      record(input);
      return {};
    },
  };
  const run = () =>
    new StateMachine(definition).run(
      { imageId: "img-1" },
      {
        // Step Functions gives every execution a name; the steps pass it on (`$$.Execution.Name`).
        context: { Execution: { Name: "img-1-exec" } },
        overrides: {
          taskResourceLocalHandlers: handlers,
          retryIntervalOverrides: {
            ConvertRange: 0,
            Plan: 0,
            Complete: 0,
            HashLink: 0,
            UploadHashLink: 0,
            Finish: 0,
            Cleanup: 0,
          },
        },
      },
    ).result;
  return {
    run,
    calls,
    steps: () => calls.map((c) => c.step),
    stored: () => stored,
    maxConverting: () => maxConverting,
  };
}

describe("fan-out definition under aws-local-stepfunctions (stand-in handlers)", () => {
  // 23 MiB + 5 bytes: 5 parts of 5 MiB (the last short), 3 ranges of 2 parts, 4 hash links.
  const image = randomBytes(23 * MiB + 5);

  it("plans, converts every range at most `workers` at a time, completes, chains the hash to the end, finishes", async () => {
    const h = harness(image);
    const output = (await h.run()) as {
      imageId: string;
      plan: { uploadId: string };
      digests: { stored: Record<string, string>; upload: Record<string, string> };
    };
    expect(h.steps()).toEqual([
      "plan",
      "convert",
      "convert",
      "convert",
      "complete",
      "hash",
      "hash",
      "hash",
      "hash",
      "finish",
    ]);
    expect(h.maxConverting()).toBeLessThanOrEqual(2);
    // Every step, ranges included, names the execution: the record is written only while it is that one.
    expect(new Set(h.calls.map((c) => c.execution))).toEqual(new Set(["img-1-exec"]));
    expect(Buffer.compare(h.stored() as Uint8Array, image)).toBe(0);
    const finish = h.calls.at(-1) as Step & {
      digests: Record<string, string>;
      uploadDigests: Record<string, string>;
    };
    expect(finish.digests).toEqual({
      md5: createHash("md5").update(image).digest("hex"),
      sha512: createHash("sha512").update(image).digest("hex"),
    });
    // No upload chain was planned: its branch gives no digests.
    expect(finish.uploadDigests).toEqual({});
    // "ResultPath": null kept each state's input: the plan and the execution's input reach the end.
    expect(output.imageId).toBe("img-1");
    expect(output.plan.uploadId).toBe("upload-1");
    expect(output.digests.stored).toEqual(finish.digests);
  });

  it("runs the upload's own chain beside the conversion, and gives Finish both chains' digests", async () => {
    // 16 MiB + 1: three links of 7 MiB + 3, a size unrelated to the stored image's.
    const upload = randomBytes(16 * MiB + 1);
    const h = harness(image, { upload });
    await h.run();
    const steps = h.steps();
    expect(steps.filter((s) => s === "hash")).toHaveLength(4 + 3);
    const uploadLinks = h.calls.filter((c) => c.chain === "upload");
    expect(uploadLinks.map((c) => c.offset)).toEqual([0, LINK, 2 * LINK]);
    // Beside the Map, not after it: an upload link ran before the stored image was completed.
    expect(steps.indexOf("hash")).toBeLessThan(steps.indexOf("complete"));
    expect(steps.at(-1)).toBe("finish");
    const finish = h.calls.at(-1) as Step & {
      digests: Record<string, string>;
      uploadDigests: Record<string, string>;
    };
    expect(finish.uploadDigests).toEqual({ sha256: createHash("sha256").update(upload).digest("hex") });
    expect(finish.digests.md5).toBe(createHash("md5").update(image).digest("hex"));
  });

  it("runs no upload chain for a plan without hashUpload (older control code), and still finishes", async () => {
    const h = harness(image, { olderPlan: true });
    await h.run();
    expect(h.calls.filter((c) => c.chain === "upload")).toEqual([]);
    expect(h.calls.at(-1)).toMatchObject({ step: "finish", uploadDigests: {} });
  });

  it("sends an upload link's failure (a digest that does not match) to Cleanup with its reason; no Finish", async () => {
    const h = harness(image, { upload: randomBytes(16 * MiB + 1), failUploadAt: 2 * LINK });
    const failure = await h.run().catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ExecutionError);
    expect(h.steps()).not.toContain("finish");
    const cleanup = h.calls.at(-1) as Step & { error: { Error: string; Cause: string } };
    expect(cleanup.step).toBe("cleanup");
    expect(cleanup.error.Error).toBe("Hangar.DIGEST_MISMATCH");
    expect(cleanup.error.Cause).toMatch(/declared upload_sha256/);
  });

  it("retries a range after a Lambda service error", async () => {
    const h = harness(image, { serviceErrorsOnce: true });
    await h.run();
    expect(h.steps().filter((s) => s === "convert")).toHaveLength(4);
    expect(h.steps().at(-1)).toBe("finish");
  });

  it("sends a worker's failure to Cleanup with the error, skips the rest, and fails the execution", async () => {
    const h = harness(image, { failRange: 1 });
    const failure = await h.run().catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ExecutionError);
    expect((failure as Error).message).toMatch(/The fan-out import failed/);
    expect(((failure as Error).cause as Error).name).toBe("Hangar.FanoutFailed");
    expect(h.steps()).not.toContain("complete");
    expect(h.steps()).not.toContain("finish");
    const cleanup = h.calls.at(-1) as Step & { error: { Error: string; Cause: string } };
    expect(cleanup.step).toBe("cleanup");
    expect(cleanup.imageId).toBe("img-1");
    expect(cleanup.error.Error).toBe("Hangar.RangeFailed");
    expect(cleanup.error.Cause).toMatch(/cannot read cluster/);
  });
});
