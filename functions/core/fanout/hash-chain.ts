import { createHash } from "node:crypto";
import { createMD5, createSHA256, createSHA384, createSHA512, type IHasher } from "hash-wasm";
import { HangarError } from "../errors.ts";
import type { HashAlgo } from "../image/format-names.ts";

/**
 * The whole-image digests of a fanned-out import, computed by a chain of invocations. md5 and
 * `os_hash_value` are sequential by nature, so one link hashes one range of the stored image and hands
 * the hash state to the next link as data (a Step Functions payload), not as a file or a process.
 *
 * A link is a pure function of its input: re-running it (a retried state) gives the same output, and
 * a link whose range does not start where the state stopped is refused rather than hashed twice.
 * Memory: the hash states (under 1 KiB) and the one chunk being hashed.
 */

/** The algorithms a chain carries: md5 (Glance's `checksum`) and the `os_hash_algo`s. */
export type ChainAlgo = "md5" | HashAlgo;

/** The serialized state between two links: JSON, a few hundred bytes per algorithm in base64. */
export interface HashChainState {
  /** Layout version of this object. */
  readonly v: 1;
  /** Bytes hashed so far, i.e. the offset where the next link's range must start. */
  readonly bytes: number;
  /** hash-wasm's saved state per algorithm, base64. */
  readonly states: Readonly<Partial<Record<ChainAlgo, string>>>;
  /** sha256 (hex) over the fields above: hash-wasm checks only its build tag, not the state itself. */
  readonly check: string;
}

/** One link's work: where its range starts, how long it is, and the bytes of that range. */
export interface HashLinkInput {
  /** The state left by the previous link; none for the first link (which must start at 0). */
  readonly state?: HashChainState | undefined;
  /** The algorithms of the whole chain; every link names the same ones. */
  readonly algos: readonly ChainAlgo[];
  /** Offset of this range in the image; must equal the state's `bytes`. */
  readonly offset: number;
  /** Length of this range; the source must yield exactly this many bytes. */
  readonly length: number;
  readonly source: AsyncIterable<Uint8Array>;
  /** The last link finishes the digests instead of saving a state. */
  readonly last: boolean;
  readonly signal?: AbortSignal | undefined;
}

export type HashLinkOutput =
  | { readonly done: false; readonly state: HashChainState }
  | {
      readonly done: true;
      readonly bytes: number;
      readonly digests: Readonly<Partial<Record<ChainAlgo, string>>>;
    };

/** A hash state that cannot be used: corrupted, from another layout, or not where the link starts. */
export class HashChainStateError extends HangarError {
  readonly reason = "HASH_STATE_INVALID";
}

const CREATE: Record<ChainAlgo, () => Promise<IHasher>> = {
  md5: createMD5,
  sha256: createSHA256,
  sha384: createSHA384,
  sha512: createSHA512,
};

/** The integrity check of a state: over a fixed order of fields, so JSON key order does not matter. */
function checkOf(bytes: number, states: Partial<Record<ChainAlgo, string>>): string {
  const h = createHash("sha256").update(`hangar-hash-chain/v1\n${bytes}\n`);
  for (const algo of Object.keys(states).sort()) h.update(`${algo}=${states[algo as ChainAlgo]}\n`);
  return h.digest("hex");
}

function validAlgos(algos: readonly ChainAlgo[]): ChainAlgo[] {
  const set = [...new Set(algos)];
  if (set.length === 0) throw new HashChainStateError("A hash chain needs at least one algorithm");
  for (const a of set) {
    if (!Object.hasOwn(CREATE, a)) throw new HashChainStateError(`Unknown hash algorithm ${String(a)}`);
  }
  return set;
}

/** Hashers restored from `state` (or fresh for the first link), after checking the state is whole. */
async function restore(
  algos: ChainAlgo[],
  offset: number,
  state: HashChainState | undefined,
): Promise<Map<ChainAlgo, IHasher>> {
  const hashers = new Map<ChainAlgo, IHasher>();
  if (!state) {
    if (offset !== 0) throw new HashChainStateError(`The first link must start at offset 0, not ${offset}`);
    for (const a of algos) hashers.set(a, (await CREATE[a]()).init());
    return hashers;
  }
  if (
    state.v !== 1 ||
    !Number.isSafeInteger(state.bytes) ||
    state.bytes < 0 ||
    typeof state.states !== "object"
  ) {
    throw new HashChainStateError("The hash state has an unknown layout");
  }
  if (checkOf(state.bytes, state.states) !== state.check) {
    throw new HashChainStateError("The hash state is corrupted (its integrity check does not match)");
  }
  if (state.bytes !== offset) {
    throw new HashChainStateError(
      `The hash state stops at byte ${state.bytes}, but this link starts at ${offset}`,
    );
  }
  for (const a of algos) {
    const saved = state.states[a];
    if (saved === undefined) throw new HashChainStateError(`The hash state carries no ${a} state`);
    const hasher = await CREATE[a]();
    try {
      hasher.load(Buffer.from(saved, "base64"));
    } catch (cause) {
      throw new HashChainStateError(`The ${a} hash state cannot be restored`, { cause });
    }
    hashers.set(a, hasher);
  }
  return hashers;
}

/**
 * Runs one link of the chain: restores the state, hashes exactly `length` bytes from `source`, and
 * returns the next state, or the hex digests for the last link.
 */
export async function hashLink(input: HashLinkInput): Promise<HashLinkOutput> {
  const algos = validAlgos(input.algos);
  if (
    !Number.isSafeInteger(input.offset) ||
    input.offset < 0 ||
    !Number.isSafeInteger(input.length) ||
    input.length < 0
  ) {
    throw new HashChainStateError(`Invalid range: offset ${input.offset}, length ${input.length}`);
  }
  const hashers = await restore(algos, input.offset, input.state);
  let seen = 0;
  for await (const chunk of input.source) {
    input.signal?.throwIfAborted();
    seen += chunk.byteLength;
    if (seen > input.length) {
      throw new HashChainStateError(
        `The range at ${input.offset} yielded more than its ${input.length} bytes`,
      );
    }
    for (const h of hashers.values()) h.update(chunk);
  }
  if (seen !== input.length) {
    throw new HashChainStateError(
      `The range at ${input.offset} yielded ${seen} of its ${input.length} bytes`,
    );
  }
  const bytes = input.offset + input.length;
  if (input.last) {
    const digests: Partial<Record<ChainAlgo, string>> = {};
    for (const [a, h] of hashers) digests[a] = h.digest("hex");
    return { done: true, bytes, digests };
  }
  const states: Partial<Record<ChainAlgo, string>> = {};
  for (const [a, h] of hashers) states[a] = Buffer.from(h.save()).toString("base64");
  return { done: false, state: { v: 1, bytes, states, check: checkOf(bytes, states) } };
}
