import type { HangarClient, MultipartPlan, SignedPart } from "./api.ts";

/** Part links signed per request: enough to keep the pipeline fed, few enough to stay fresh. */
const SIGN_BATCH = 32;
/** A link this close to its expiry is signed again before use. */
const FRESH_FOR_MS = 60_000;

/**
 * Presigned links for the parts of a multipart plan, signed in batches ahead of use, in the order the
 * parts will be sent, and signed again when close to expiry or refused as expired.
 */
export class PartLinks {
  private readonly links = new Map<number, Promise<SignedPart>>();

  constructor(
    private readonly client: HangarClient,
    private readonly plan: MultipartPlan,
    /** Part numbers still to send, ascending. */
    private readonly toSend: readonly number[],
  ) {}

  /** The link for part `n`; `fresh` discards a link storage refused. */
  async get(n: number, fresh: boolean): Promise<SignedPart> {
    if (fresh) this.links.delete(n);
    const link = await this.pending(n);
    if (Date.parse(link.expires_at) - Date.now() >= FRESH_FOR_MS) return link;
    this.links.delete(n);
    return this.pending(n);
  }

  private pending(n: number): Promise<SignedPart> {
    if (!this.links.has(n)) this.signFrom(n);
    return this.links.get(n) as Promise<SignedPart>;
  }

  private signFrom(from: number): void {
    const batch = this.toSend.filter((n) => n >= from && !this.links.has(n)).slice(0, SIGN_BATCH);
    if (!batch.includes(from)) batch.unshift(from);
    const request = this.client.signParts(this.plan, batch);
    for (const n of batch) {
      const link = request.then((parts) => {
        const part = parts.find((p) => p.part_number === n);
        if (!part) throw new Error(`the API signed no link for part ${n}`);
        return part;
      });
      // Whoever asks for the part sees the failure; a part never asked for (the upload stopped) must
      // not take the process down as an unhandled rejection.
      link.catch(() => undefined);
      this.links.set(n, link);
    }
    // A failed batch is forgotten, so the next attempt signs again.
    request.catch(() => {
      for (const n of batch) this.links.delete(n);
    });
  }
}
