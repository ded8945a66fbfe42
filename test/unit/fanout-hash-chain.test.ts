import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  type ChainAlgo,
  type HashChainState,
  HashChainStateError,
  type HashLinkOutput,
  hashLink,
} from "../../functions/core/fanout/hash-chain.ts";
import { HASH_ALGOS } from "../../functions/core/image/format-names.ts";

/** Yields `bytes` in uneven chunks, so neither chunk nor range edges line up with hash blocks. */
async function* chunks(bytes: Uint8Array, size = 4093): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < bytes.byteLength; off += size)
    yield bytes.subarray(off, Math.min(off + size, bytes.byteLength));
}

/** Runs the whole chain over `data` cut at `cuts`, passing each state through JSON as Step Functions would. */
async function runChain(data: Uint8Array, cuts: number[], algos: ChainAlgo[]): Promise<HashLinkOutput> {
  const edges = [0, ...cuts, data.byteLength];
  let state: HashChainState | undefined;
  let out: HashLinkOutput | undefined;
  for (let i = 0; i + 1 < edges.length; i++) {
    const start = edges[i] as number;
    const end = edges[i + 1] as number;
    out = await hashLink({
      state,
      algos,
      offset: start,
      length: end - start,
      source: chunks(data.subarray(start, end)),
      last: i + 2 === edges.length,
    });
    if (!out.done) state = JSON.parse(JSON.stringify(out.state)) as HashChainState;
  }
  if (!out) throw new Error("empty chain");
  return out;
}

const oneShot = (algo: string, data: Uint8Array) => createHash(algo).update(data).digest("hex");

describe("hash chain", () => {
  // 3 MiB + 77 bytes cut at offsets that are not multiples of 64 or 128 (md5/sha blocks).
  const data = randomBytes(3 * 1024 * 1024 + 77);
  const cuts = [1, 65_537, 1_000_003, 1_000_004, 2_999_999];

  for (const algo of HASH_ALGOS) {
    it(`gives node:crypto's md5 and ${algo} over six uneven links`, async () => {
      const out = await runChain(data, cuts, ["md5", algo]);
      expect(out).toEqual({
        done: true,
        bytes: data.byteLength,
        digests: { md5: oneShot("md5", data), [algo]: oneShot(algo, data) },
      });
    });
  }

  it("gives node:crypto's sha256 alone (the upload chain) over six uneven links, and over 3 MiB links", async () => {
    expect(await runChain(data, cuts, ["sha256"])).toEqual({
      done: true,
      bytes: data.byteLength,
      digests: { sha256: oneShot("sha256", data) },
    });
    const even = await runChain(
      data,
      [1, 2, 3].map((n) => n * 1024 * 1024).filter((c) => c < data.byteLength),
      ["sha256"],
    );
    expect(even.done && even.digests.sha256).toBe(oneShot("sha256", data));
  });

  it("gives the same digests for a single link and for an empty image", async () => {
    const single = await runChain(data, [], ["md5", "sha512"]);
    expect(single.done && single.digests.sha512).toBe(oneShot("sha512", data));
    const empty = await runChain(new Uint8Array(0), [], ["md5"]);
    expect(empty.done && empty.digests.md5).toBe(oneShot("md5", new Uint8Array(0)));
  });

  it("keeps every state small enough for a Step Functions payload", async () => {
    const out = await hashLink({
      algos: ["md5", ...HASH_ALGOS],
      offset: 0,
      length: 1000,
      source: chunks(data.subarray(0, 1000)),
      last: false,
    });
    if (out.done) throw new Error("expected a state");
    // Step Functions caps a state's input and output at 256 KiB; one state is a small fraction of that.
    expect(JSON.stringify(out.state).length).toBeLessThan(2048);
  });

  it("restores a state saved by another process", async () => {
    const half = 1_234_567;
    const script = `
      import { hashLink } from "./functions/core/fanout/hash-chain.ts";
      const data = Buffer.from(process.argv[1], "base64");
      async function* one() { yield data; }
      const out = await hashLink({ algos: ["md5", "sha384"], offset: 0, length: data.length, source: one(), last: false });
      process.stdout.write(JSON.stringify(out.state));
    `;
    const first = data.subarray(0, 64 * 1024 + 3);
    const stdout = execFileSync(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", script, first.toString("base64")],
      {
        encoding: "utf8",
        maxBuffer: 16 * 1024 * 1024,
      },
    );
    const state = JSON.parse(stdout) as HashChainState;
    expect(state.bytes).toBe(first.byteLength);
    const out = await hashLink({
      state,
      algos: ["md5", "sha384"],
      offset: first.byteLength,
      length: half - first.byteLength,
      source: chunks(data.subarray(first.byteLength, half)),
      last: true,
    });
    expect(out.done && out.digests).toEqual({
      md5: oneShot("md5", data.subarray(0, half)),
      sha384: oneShot("sha384", data.subarray(0, half)),
    });
  });

  describe("refuses", () => {
    async function stateAt(bytes: number): Promise<HashChainState> {
      const out = await hashLink({
        algos: ["md5", "sha512"],
        offset: 0,
        length: bytes,
        source: chunks(data.subarray(0, bytes)),
        last: false,
      });
      if (out.done) throw new Error("expected a state");
      return out.state;
    }
    const next = (state: HashChainState, offset = state.bytes) =>
      hashLink({
        state,
        algos: ["md5", "sha512"],
        offset,
        length: 10,
        source: chunks(data.subarray(offset, offset + 10)),
        last: true,
      });

    it("a state with one flipped byte in a saved hash", async () => {
      const state = await stateAt(5000);
      const raw = Buffer.from(state.states.sha512 as string, "base64");
      raw[40] = (raw[40] as number) ^ 1;
      const corrupted = { ...state, states: { ...state.states, sha512: raw.toString("base64") } };
      await expect(next(corrupted)).rejects.toThrow(
        new HashChainStateError("The hash state is corrupted (its integrity check does not match)"),
      );
    });

    it("a state whose byte count was changed", async () => {
      const state = await stateAt(5000);
      await expect(next({ ...state, bytes: 5001 }, 5001)).rejects.toThrow(/corrupted/);
    });

    it("a link that does not start where the state stopped (a range hashed twice or skipped)", async () => {
      const state = await stateAt(5000);
      await expect(next(state, 4990)).rejects.toThrow(
        "The hash state stops at byte 5000, but this link starts at 4990",
      );
      await expect(next(state, 5010)).rejects.toThrow(/stops at byte 5000/);
    });

    it("a state of another layout, and one missing an algorithm", async () => {
      const state = await stateAt(5000);
      await expect(next({ ...state, v: 2 } as unknown as HashChainState)).rejects.toThrow(/unknown layout/);
      const out = await hashLink({
        state,
        algos: ["md5", "sha256"],
        offset: 5000,
        length: 0,
        source: chunks(new Uint8Array(0)),
        last: true,
      }).catch((e: unknown) => e);
      expect(out).toBeInstanceOf(HashChainStateError);
      expect((out as HashChainStateError).message).toBe("The hash state carries no sha256 state");
      expect((out as HashChainStateError).reason).toBe("HASH_STATE_INVALID");
    });

    it("a source that yields fewer or more bytes than the range", async () => {
      const short = hashLink({
        algos: ["md5"],
        offset: 0,
        length: 11,
        source: chunks(data.subarray(0, 10)),
        last: true,
      });
      await expect(short).rejects.toThrow("The range at 0 yielded 10 of its 11 bytes");
      const long = hashLink({
        algos: ["md5"],
        offset: 0,
        length: 9,
        source: chunks(data.subarray(0, 10)),
        last: true,
      });
      await expect(long).rejects.toThrow(/more than its 9 bytes/);
    });

    it("a first link that does not start at 0", async () => {
      await expect(
        hashLink({ algos: ["md5"], offset: 5, length: 0, source: chunks(new Uint8Array(0)), last: true }),
      ).rejects.toThrow(/first link must start at offset 0/);
    });
  });
});
