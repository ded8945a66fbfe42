import { ConflictError, StaleStatusError } from "../../functions/core/errors.ts";
import type { ImageRecord, ImageStatus } from "../../functions/core/image/image.ts";
import { TRANSITIONS, type TransitionName } from "../../functions/core/image/transitions.ts";
import type {
  ImageRepository,
  Logger,
  ObjectInfo,
  ObjectStore,
  PresignedRequest,
} from "../../functions/core/ports.ts";

/** In-memory repository with the same conditional semantics as the DynamoDB adapter (pure logic tests only). */
export class MemoryImages implements ImageRepository {
  readonly items = new Map<string, ImageRecord>();

  async create(image: ImageRecord) {
    if (this.items.has(image.id)) throw new ConflictError("exists", "DUPLICATE_ID");
    this.items.set(image.id, structuredClone(image));
  }
  async get(id: string) {
    const i = this.items.get(id);
    return i ? structuredClone(i) : undefined;
  }
  async listByOwner(owner: string) {
    return [...this.items.values()].filter((i) => i.owner === owner).map((i) => structuredClone(i));
  }
  async listByVisibility(v: "public" | "community") {
    return [...this.items.values()].filter((i) => i.visibility === v).map((i) => structuredClone(i));
  }
  async transition(
    id: string,
    name: TransitionName,
    changes: Partial<ImageRecord>,
    options: { allowExpiredLeaseFrom?: ImageStatus; now?: string } = {},
  ) {
    const edge = TRANSITIONS[name];
    const cur = this.items.get(id);
    const leaseExpired =
      cur !== undefined &&
      options.allowExpiredLeaseFrom === cur.status &&
      options.now !== undefined &&
      cur.import_lease_until !== null &&
      cur.import_lease_until < options.now;
    if (!cur || !((edge.from as readonly string[]).includes(cur.status) || leaseExpired)) {
      throw new StaleStatusError(id, edge.from);
    }
    const next = { ...cur, ...changes, status: edge.to };
    this.items.set(id, next);
    return structuredClone(next);
  }
  async update(id: string, changes: Partial<ImageRecord>, whileIn: readonly ImageStatus[]) {
    const cur = this.items.get(id);
    if (!cur || !whileIn.includes(cur.status)) throw new StaleStatusError(id, whileIn);
    const next = { ...cur, ...changes };
    this.items.set(id, next);
    return structuredClone(next);
  }
  async purge(id: string) {
    this.items.delete(id);
  }
}

/** In-memory object store; `chunkSize` splits reads like a network stream would. */
export class MemoryObjects implements ObjectStore {
  readonly objects = new Map<string, Uint8Array>();
  failReadAfter: number | undefined;
  constructor(private readonly chunkSize = 1000) {}

  async presignPut(
    key: string,
    o: { expiresInSeconds: number; contentLength?: number },
  ): Promise<PresignedRequest> {
    return {
      method: "PUT",
      url: `http://storage.invalid/${key}`,
      headers: o.contentLength !== undefined ? { "Content-Length": String(o.contentLength) } : {},
      expiresAt: new Date(Date.now() + o.expiresInSeconds * 1000).toISOString(),
    };
  }
  async presignGet(key: string, o: { expiresInSeconds: number }): Promise<PresignedRequest> {
    return {
      method: "GET",
      url: `http://storage.invalid/${key}?get`,
      headers: {},
      expiresAt: String(o.expiresInSeconds),
    };
  }
  async head(key: string): Promise<ObjectInfo | undefined> {
    const o = this.objects.get(key);
    return o ? { size: o.byteLength, etag: undefined } : undefined;
  }
  async *read(key: string) {
    const o = this.objects.get(key);
    if (!o) throw new Error(`no object ${key}`);
    for (let i = 0; i < o.byteLength; i += this.chunkSize) {
      if (this.failReadAfter !== undefined && i >= this.failReadAfter) throw new Error("connection reset");
      yield o.subarray(i, i + this.chunkSize);
    }
  }
  async readRange(key: string, offset: number, length: number) {
    const o = this.objects.get(key);
    if (!o) throw new Error(`no object ${key}`);
    return o.slice(offset, offset + length);
  }
  async write(key: string, body: AsyncIterable<Uint8Array>) {
    const parts: Uint8Array[] = [];
    for await (const c of body) parts.push(c);
    const all = Buffer.concat(parts);
    this.objects.set(key, all);
    return { size: all.byteLength };
  }
  async delete(key: string) {
    this.objects.delete(key);
  }
  async deletePrefix(prefix: string) {
    for (const k of [...this.objects.keys()]) if (k.startsWith(prefix)) this.objects.delete(k);
  }
}

export const silentLog: Logger = { info() {}, warn() {}, error() {} };

export const fixedClock = (iso = "2026-01-01T00:00:00.000Z") => {
  let t = new Date(iso).getTime();
  return { now: () => new Date(t), advance: (ms: number) => (t += ms) };
};
