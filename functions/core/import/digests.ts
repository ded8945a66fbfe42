import { createHash, type Hash } from "node:crypto";

export type DigestName = "md5" | "sha256" | "sha384" | "sha512";

/** Hashes one byte stream with several algorithms at once; the memory held is the hash states only. */
export class Digests {
  private readonly hashes: Map<DigestName, Hash>;
  bytes = 0;

  constructor(names: Iterable<DigestName>) {
    this.hashes = new Map([...new Set(names)].map((n) => [n, createHash(n)]));
  }

  update(chunk: Uint8Array): void {
    this.bytes += chunk.byteLength;
    for (const h of this.hashes.values()) h.update(chunk);
  }

  /** Hex digests by algorithm; call once, at the end. */
  digest(): Partial<Record<DigestName, string>> {
    const out: Partial<Record<DigestName, string>> = {};
    for (const [name, h] of this.hashes) out[name] = h.digest("hex");
    return out;
  }
}
