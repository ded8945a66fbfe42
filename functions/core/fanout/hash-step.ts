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
import type { FanoutProgressStore, FanoutStorage } from "./ports.ts";

export interface HashStepDeps extends StepDeps {
  storage: FanoutStorage;
  progress: FanoutProgressStore;
}

export interface HashStepInput extends StepInput {
  /** The stored object's size as planned (`$.plan.virtualSize`). */
  virtualSize: number;
  offset: number;
  state: HashChainState | null;
}

/** What the state machine keeps at `$.hash`: where the next link starts, and the digests at the end. */
export type HashStepOutput =
  | { done: false; offset: number; state: HashChainState }
  | { done: true; offset: number; state: null; digests: Partial<Record<ChainAlgo, string>> };

/**
 * One link of the hash chain over the completed stored object (the `fanoutHash` function): reads
 * `hash_link_bytes` of it from `offset` with one ranged read, and records `bytes_hashed`.
 */
export function createFanoutHash(deps: HashStepDeps) {
  return {
    async hash(input: HashStepInput): Promise<HashStepOutput> {
      const { job } = await held(deps.images, input);
      if (input.virtualSize !== job.output_size) {
        throw new Error(`the plan hashes ${input.virtualSize} bytes, the job stores ${job.output_size}`);
      }
      const length = Math.min(job.hash_link_bytes, job.output_size - input.offset);
      const last = input.offset + length === job.output_size;
      const started = Date.now();
      const out = await withHeartbeat(deps, input, (signal) =>
        hashLink({
          state: input.state ?? undefined,
          algos: job.algos,
          offset: input.offset,
          length,
          source: deps.storage.readRange(imageKey(input.imageId), input.offset, length, { signal }),
          last,
          signal,
        }),
      );
      const hashed = input.offset + length;
      const ours = await deps.progress.record(
        input.imageId,
        input.execution,
        { set: { bytes_hashed: hashed } },
        leaseUntil(deps.clock),
        deps.clock.now().toISOString(),
      );
      if (!ours)
        throw new FanoutSupersededError(`image ${input.imageId} is not imported by ${input.execution}`);
      deps.log.info("fan-out hash link", {
        imageId: input.imageId,
        offset: input.offset,
        bytes: length,
        last,
        ms: Date.now() - started,
      });
      return out.done
        ? { done: true, offset: out.bytes, state: null, digests: out.digests }
        : { done: false, offset: out.state.bytes, state: out.state };
    },
  };
}
