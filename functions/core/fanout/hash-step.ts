import { imageKey } from "../image/image.ts";
import { type ChainAlgo, type HashChainState, hashLink } from "./hash-chain.ts";
import {
  FanoutSupersededError,
  held,
  leaseUntil,
  type StepDeps,
  type StepInput,
  withHeartbeat,
} from "./held.ts";
import { checkDeclaredSha256, type FanoutJob } from "./job.ts";
import type { FanoutProgressStore, FanoutStorage } from "./ports.ts";

export interface HashStepDeps extends StepDeps {
  storage: FanoutStorage;
  progress: FanoutProgressStore;
}

/** Where a link starts, and the state the previous link left (none for the first). */
interface LinkInput extends StepInput {
  offset: number;
  state: HashChainState | null;
}

/**
 * A link of one of the two chains: the stored object's (`chain` absent or `stored`, sized by
 * `$.plan.virtualSize`) or the upload's (`chain: "upload"`, sized by `$.plan.uploadSize`).
 */
export type HashStepInput = LinkInput &
  ({ chain?: "stored"; virtualSize: number } | { chain: "upload"; uploadSize: number });

/** What the state machine keeps at `$.hash` (or `$.uploadHash`): where the next link starts, and the digests at the end. */
export type HashStepOutput =
  | { done: false; offset: number; state: HashChainState }
  | { done: true; offset: number; state: null; digests: Partial<Record<ChainAlgo, string>> };

/** What one chain reads: its object, how much of it, with which algorithms, and what it counts. */
interface ChainTarget {
  key: string;
  size: number;
  ifMatch: string | undefined;
  algos: ChainAlgo[];
  progressField: "bytes_hashed" | "upload_bytes_hashed";
  logLine: string;
}

function targetOf(imageId: string, job: FanoutJob, input: HashStepInput): ChainTarget {
  if (input.chain === "upload") {
    if (input.uploadSize !== job.upload_size) {
      throw new Error(
        `the plan hashes ${input.uploadSize} bytes of the upload, the job has ${job.upload_size}`,
      );
    }
    const algos = job.upload_algos ?? [];
    if (algos.length === 0) throw new Error("the job names no algorithm for the upload chain");
    return {
      key: job.upload_key,
      size: job.upload_size,
      // Every read of the upload, as every read the workers make, is of the upload that was inspected.
      ifMatch: job.upload_etag ?? undefined,
      algos,
      progressField: "upload_bytes_hashed",
      logLine: "fan-out upload hash link",
    };
  }
  if (input.virtualSize !== job.output_size) {
    throw new Error(`the plan hashes ${input.virtualSize} bytes, the job stores ${job.output_size}`);
  }
  return {
    key: imageKey(imageId),
    size: job.output_size,
    ifMatch: undefined,
    algos: job.algos,
    progressField: "bytes_hashed",
    logLine: "fan-out hash link",
  };
}

/**
 * One link of a hash chain (the `fanoutHash` function): reads `hash_link_bytes` of its object from
 * `offset` with one ranged read, and records how far it got in `import_progress`. The stored chain reads
 * the completed stored object (md5, `os_hash_algo`, …); the upload chain reads the staged upload
 * (sha256, for a converted upload's declared digest), and its last link refuses a digest that is not the
 * declared one at once (`DIGEST_MISMATCH`), without waiting for the conversion; `finish` checks it again.
 */
export function createFanoutHash(deps: HashStepDeps) {
  return {
    async hash(input: HashStepInput): Promise<HashStepOutput> {
      const { image, job } = await held(deps.images, input);
      const target = targetOf(input.imageId, job, input);
      const length = Math.min(job.hash_link_bytes, target.size - input.offset);
      const last = input.offset + length === target.size;
      const started = Date.now();
      const out = await withHeartbeat(deps, input, (signal) =>
        hashLink({
          state: input.state ?? undefined,
          algos: target.algos,
          offset: input.offset,
          length,
          source: deps.storage.readRange(target.key, input.offset, length, {
            ifMatch: target.ifMatch,
            signal,
          }),
          last,
          signal,
        }),
      );
      const hashed = input.offset + length;
      const ours = await deps.progress.record(
        input.imageId,
        input.execution,
        { set: { [target.progressField]: hashed } },
        leaseUntil(deps.clock),
        deps.clock.now().toISOString(),
      );
      if (!ours)
        throw new FanoutSupersededError(`image ${input.imageId} is not imported by ${input.execution}`);
      deps.log.info(target.logLine, {
        imageId: input.imageId,
        offset: input.offset,
        bytes: length,
        last,
        ms: Date.now() - started,
      });
      if (!out.done) return { done: false, offset: out.state.bytes, state: out.state };
      if (input.chain === "upload") checkDeclaredSha256(image.upload_sha256, out.digests.sha256);
      return { done: true, offset: out.bytes, state: null, digests: out.digests };
    },
  };
}
