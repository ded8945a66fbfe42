import { ConflictError, NotFoundError, StaleStatusError } from "../../functions/core/errors.ts";
import type { MemberStatus } from "../../functions/core/image/access.ts";
import { blankRecord } from "../../functions/core/image/create.ts";
import type { ImageRecord, ImageStatus } from "../../functions/core/image/image.ts";
import type { ImageMember } from "../../functions/core/image/members.ts";
import { TRANSITIONS, type TransitionName } from "../../functions/core/image/transitions.ts";
import { createImageService } from "../../functions/core/images.ts";
import {
  type CopyOptions,
  type ImageRepository,
  type ListedImage,
  type ListedVersion,
  type ListOptions,
  type ListSource,
  type Logger,
  listPosition,
  type MemberRepository,
  ObjectChangedError,
  type ObjectInfo,
  type ObjectStore,
  type PendingWrite,
  type PresignedRequest,
  type WriteOptions,
} from "../../functions/core/ports.ts";
import {
  type Counters,
  heldBy,
  type Limits,
  QUOTA_KEYS,
  type QuotaKey,
  type QuotaStore,
  UNLIMITED,
  ZERO,
} from "../../functions/core/quota.ts";
import { createMultipartUploads } from "../../functions/core/uploads/multipart.ts";
import { MIB } from "../../functions/core/uploads/plan.ts";
import type {
  ListedObject,
  MultipartUploads,
  PendingUpload,
  StoredPart,
} from "../../functions/core/uploads/ports.ts";

/** In-memory repository with the same conditional semantics as the DynamoDB adapter (pure logic tests only). */
export class MemoryImages implements ImageRepository {
  readonly items = new Map<string, ImageRecord>();
  /** The memberships a `member` listing source reads. */
  members: MemoryMembers | undefined;

  async create(image: ImageRecord) {
    if (this.items.has(image.id)) throw new ConflictError("exists", "DUPLICATE_ID");
    this.items.set(image.id, structuredClone(image));
  }
  async get(id: string) {
    const i = this.items.get(id);
    return i ? structuredClone(i) : undefined;
  }
  /** Lists every source as the DynamoDB indexes do: in creation order, after a position. */
  async *list(source: ListSource, options: ListOptions): AsyncIterable<ListedImage> {
    const listed: ListedImage[] = [];
    if (source.kind === "member") {
      for (const m of (await this.members?.listByMember(source.member)) ?? []) {
        const image = this.items.get(m.image_id);
        if (image && (source.status === "all" || m.status === source.status))
          listed.push({ image: structuredClone(image), memberStatus: m.status });
      }
    } else {
      for (const image of this.items.values()) {
        const fits =
          source.kind === "all" ||
          (source.kind === "owner" && image.owner === source.owner) ||
          (source.kind === "visibility" && image.visibility === source.visibility);
        if (fits) listed.push({ image: structuredClone(image) });
      }
    }
    const sign = options.order === "asc" ? 1 : -1;
    const pos = (l: ListedImage) => listPosition(l.image);
    listed.sort((a, b) => sign * (pos(a) < pos(b) ? -1 : pos(a) > pos(b) ? 1 : 0));
    const { after } = options;
    yield* listed.filter(
      (l) => after === undefined || sign * (pos(l) < after ? -1 : pos(l) > after ? 1 : 0) > 0,
    );
  }
  async listAll() {
    return [...this.items.values()].map((i) => structuredClone(i));
  }
  async transition(
    id: string,
    name: TransitionName,
    changes: Partial<ImageRecord>,
    options: {
      allowExpiredLeaseFrom?: ImageStatus;
      now?: string;
      leaseIs?: string;
      unlessProtected?: boolean;
    } = {},
  ) {
    const edge = TRANSITIONS[name];
    const cur = this.items.get(id);
    if (cur && options.leaseIs !== undefined && cur.import_lease_until !== options.leaseIs) {
      throw new StaleStatusError(id, edge.from, { current: structuredClone(cur) });
    }
    const leaseExpired =
      cur !== undefined &&
      options.allowExpiredLeaseFrom === cur.status &&
      options.now !== undefined &&
      cur.import_lease_until !== null &&
      cur.import_lease_until < options.now;
    if (
      !cur ||
      !((edge.from as readonly string[]).includes(cur.status) || leaseExpired) ||
      (options.unlessProtected && cur.protected)
    ) {
      throw new StaleStatusError(id, edge.from, { current: structuredClone(cur) });
    }
    const next = { ...cur, ...changes, status: edge.to };
    this.items.set(id, next);
    return structuredClone(next);
  }
  async update(
    id: string,
    changes: Partial<ImageRecord>,
    whileIn: readonly ImageStatus[],
    options: { unchanged?: Partial<ImageRecord> } = {},
  ) {
    const cur = this.items.get(id);
    if (!cur || !whileIn.includes(cur.status))
      throw new StaleStatusError(id, whileIn, { current: structuredClone(cur) });
    for (const [field, value] of Object.entries(options.unchanged ?? {})) {
      if (JSON.stringify(cur[field as keyof ImageRecord]) !== JSON.stringify(value))
        throw new StaleStatusError(id, whileIn, { current: structuredClone(cur) });
    }
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
  /** Last-modified times a test sets for listings (multipart fakes); absent keys list without one. */
  readonly modified = new Map<string, string>();
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
    return o ? { size: o.byteLength, etag: this.etagOf(o) } : undefined;
  }
  /** A version tag per stored array: a key given new bytes gets a new one. */
  private readonly etags = new WeakMap<Uint8Array, string>();
  private etagCount = 0;
  private etagOf(o: Uint8Array): string {
    let etag = this.etags.get(o);
    if (etag === undefined) {
      etag = `"v${++this.etagCount}"`;
      this.etags.set(o, etag);
    }
    return etag;
  }
  /** Every copy made, in order (the store's server-side copies). */
  readonly copies: { from: string; to: string; ifMatch?: string | undefined }[] = [];
  async copy(from: string, to: string, options: CopyOptions = {}) {
    this.copies.push({ from, to, ifMatch: options.ifMatch });
    options.signal?.throwIfAborted();
    const o = this.objects.get(from);
    if (!o) throw new Error(`no object ${from}`);
    if (options.ifMatch !== undefined && options.ifMatch !== this.etagOf(o)) {
      throw new ObjectChangedError(`the object at ${from} was replaced since it was read`);
    }
    this.objects.set(to, o.slice());
    return { size: o.byteLength };
  }
  async *read(key: string, _signal?: AbortSignal, options: { ifMatch?: string } = {}) {
    const o = this.objects.get(key);
    if (!o) throw new Error(`no object ${key}`);
    if (options.ifMatch !== undefined && options.ifMatch !== this.etagOf(o)) {
      throw new ObjectChangedError(`the object at ${key} was replaced since it was read`);
    }
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
  /** The options of each write, by key (the size hints a store would size its parts by). */
  readonly writeOptions = new Map<string, WriteOptions>();
  async write(
    key: string,
    body: AsyncIterable<Uint8Array>,
    _signal?: AbortSignal,
    options: WriteOptions = {},
  ) {
    this.writeOptions.set(key, options);
    const parts: Uint8Array[] = [];
    for await (const c of body) {
      // Copied before the next chunk is pulled, as the port promises producers.
      const copy = c.slice();
      parts.push(copy);
      await options.tap?.(copy);
    }
    const all = Buffer.concat(parts);
    this.objects.set(key, all);
    return { size: all.byteLength };
  }
  /** Keeps no versions (like a bucket without versioning): one object per key, deleted whole. */
  async delete(key: string, _versionId?: string) {
    this.objects.delete(key);
  }
  /** No versions kept: the one object at `key` is the one to keep. */
  async deleteOtherVersions(_key: string, _keep: string) {}
  async *list(prefix: string) {
    for (const [key, o] of this.objects) if (key.startsWith(prefix)) yield { key, size: o.byteLength };
  }
  /** Version ids a test gives objects (the one version kept at a key); others list as version `null`. */
  readonly versionIds = new Map<string, string>();
  /** One version per object, at the time `modified` gives it. */
  async *listVersions(prefix: string): AsyncIterable<ListedVersion> {
    for (const key of this.objects.keys()) {
      if (!key.startsWith(prefix)) continue;
      const versionId = this.versionIds.get(key) ?? "null";
      yield { key, versionId, lastModified: this.modified.get(key), deleteMarker: false };
    }
  }
  async deletePrefix(prefix: string) {
    for (const k of [...this.objects.keys()]) if (k.startsWith(prefix)) this.objects.delete(k);
    for (const [id, u] of this.writes) if (u.key.startsWith(prefix)) this.writes.delete(id);
  }
  /** Multipart uploads in progress, by upload id (shared with `MemoryMultipartUploads` over this store). */
  readonly writes = new Map<string, { key: string; initiated: string; parts: Map<number, StoredPart> }>();
  async listUploads(prefix: string): Promise<PendingWrite[]> {
    return [...this.writes.entries()]
      .filter(([, u]) => u.key.startsWith(prefix))
      .map(([uploadId, u]) => ({ key: u.key, uploadId }));
  }
  async abortUploads(key: string) {
    const at = (await this.listUploads(key)).filter((u) => u.key === key);
    for (const u of at) this.writes.delete(u.uploadId);
    return at.length;
  }
}

/** In-memory multipart uploads over a `MemoryObjects`; `put` plays a client following a part link. */
export class MemoryMultipartUploads implements MultipartUploads {
  readonly pending: MemoryObjects["writes"];
  private next = 1;
  constructor(
    private readonly objects: MemoryObjects,
    private readonly clock: { now(): Date } = { now: () => new Date() },
  ) {
    this.pending = objects.writes;
  }

  async create(key: string) {
    const id = `upload-${this.next++}`;
    this.pending.set(id, { key, initiated: this.clock.now().toISOString(), parts: new Map() });
    return id;
  }
  async presignPart(
    key: string,
    uploadId: string,
    partNumber: number,
    o: { expiresInSeconds: number; contentLength: number },
  ): Promise<PresignedRequest> {
    return {
      method: "PUT",
      url: `http://storage.invalid/${key}?uploadId=${uploadId}&partNumber=${partNumber}`,
      headers: { "Content-Length": String(o.contentLength) },
      expiresAt: new Date(Date.now() + o.expiresInSeconds * 1000).toISOString(),
    };
  }
  /** Stores a part as storage would on a PUT to its link. */
  put(uploadId: string, partNumber: number, bytes: Uint8Array) {
    const u = this.pending.get(uploadId);
    if (!u) throw new Error(`NoSuchUpload ${uploadId}`);
    const etag = `"${partNumber}-${bytes.byteLength}"`;
    u.parts.set(partNumber, {
      partNumber,
      size: bytes.byteLength,
      etag,
      lastModified: this.clock.now().toISOString(),
    });
    this.bytes.set(`${uploadId}/${partNumber}`, bytes);
  }
  private readonly bytes = new Map<string, Uint8Array>();
  async listParts(_key: string, uploadId: string) {
    const u = this.pending.get(uploadId);
    return u ? [...u.parts.values()].sort((a, b) => a.partNumber - b.partNumber) : undefined;
  }
  async complete(key: string, uploadId: string, parts: readonly { partNumber: number; etag: string }[]) {
    const u = this.pending.get(uploadId);
    if (!u || u.key !== key) throw new Error(`NoSuchUpload ${uploadId}`);
    const chunks = parts.map((p) => this.bytes.get(`${uploadId}/${p.partNumber}`) ?? new Uint8Array());
    this.objects.objects.set(key, Buffer.concat(chunks));
    this.pending.delete(uploadId);
  }
  async abort(_key: string, uploadId: string) {
    this.pending.delete(uploadId);
  }
  async listPending(prefix: string): Promise<PendingUpload[]> {
    return [...this.pending.entries()]
      .filter(([, u]) => u.key.startsWith(prefix))
      .map(([uploadId, u]) => ({ key: u.key, uploadId, initiated: u.initiated }));
  }
  async listObjects(prefix: string): Promise<ListedObject[]> {
    return [...this.objects.objects.entries()]
      .filter(([k]) => k.startsWith(prefix))
      .map(([key, o]) => ({ key, size: o.byteLength, lastModified: this.objects.modified.get(key) }));
  }
}

export const silentLog: Logger = { info() {}, warn() {}, error() {} };

export const fixedClock = (iso = "2026-01-01T00:00:00.000Z") => {
  let t = new Date(iso).getTime();
  return { now: () => new Date(t), advance: (ms: number) => (t += ms) };
};

/** In-memory image members (pure logic tests only). */
export class MemoryMembers implements MemberRepository {
  readonly items = new Map<string, ImageMember>();
  private key = (imageId: string, memberId: string) => `${imageId}/${memberId}`;

  async add(member: ImageMember) {
    const k = this.key(member.image_id, member.member_id);
    if (this.items.has(k)) throw new ConflictError("member exists", "DUPLICATE_MEMBER");
    this.items.set(k, structuredClone(member));
  }
  async get(imageId: string, memberId: string) {
    const m = this.items.get(this.key(imageId, memberId));
    return m ? structuredClone(m) : undefined;
  }
  async listByImage(imageId: string) {
    return [...this.items.values()].filter((m) => m.image_id === imageId).map((m) => structuredClone(m));
  }
  async listByMember(memberId: string) {
    return [...this.items.values()].filter((m) => m.member_id === memberId).map((m) => structuredClone(m));
  }
  async setStatus(imageId: string, memberId: string, status: MemberStatus, updatedAt: string) {
    const m = this.items.get(this.key(imageId, memberId));
    if (!m) throw new NotFoundError("no member", "MEMBER_NOT_FOUND");
    const next = { ...m, status, updated_at: updatedAt };
    this.items.set(this.key(imageId, memberId), next);
    return structuredClone(next);
  }
  async remove(imageId: string, memberId: string) {
    if (!this.items.delete(this.key(imageId, memberId)))
      throw new NotFoundError("no member", "MEMBER_NOT_FOUND");
  }
  async removeAll(imageId: string) {
    for (const [k, m] of this.items) if (m.image_id === imageId) this.items.delete(k);
  }
}

/** Usage derived from the in-memory records (what each image holds), limits from a map: pure logic tests. */
export class MemoryQuota implements QuotaStore {
  readonly overrides = new Map<string, Partial<Limits>>();
  readonly recorded = new Map<string, Counters>();
  constructor(
    private readonly images: MemoryImages,
    private readonly defaults: Limits = { ...UNLIMITED },
  ) {}
  async usage(project: string): Promise<Counters> {
    const recorded = this.recorded.get(project);
    if (recorded) return { ...recorded };
    const sum = { ...ZERO };
    for (const i of this.images.items.values()) {
      if (i.owner !== project) continue;
      const h = heldBy(i);
      for (const k of QUOTA_KEYS) sum[k] += h[k];
    }
    return sum;
  }
  async limits(project: string): Promise<Limits> {
    return { ...this.defaults, ...this.overrides.get(project) };
  }
  async setLimits(project: string, o: Partial<Record<QuotaKey, number | null>>): Promise<Limits> {
    const cur = { ...this.overrides.get(project) };
    for (const k of QUOTA_KEYS) {
      const v = o[k];
      if (v === null) delete cur[k];
      else if (v !== undefined) cur[k] = v;
    }
    this.overrides.set(project, cur);
    return this.limits(project);
  }
  async listProjects(): Promise<string[]> {
    const all = new Set([...this.overrides.keys(), ...this.recorded.keys()]);
    for (const i of this.images.items.values()) all.add(i.owner);
    return [...all].sort();
  }
  async replaceUsage(project: string, expected: Counters, next: Counters): Promise<boolean> {
    const cur = await this.usage(project);
    if (QUOTA_KEYS.some((k) => cur[k] !== expected[k])) return false;
    this.recorded.set(project, { ...next });
    return true;
  }
}

/**
 * An image service with multipart uploads (8 MiB threshold, 5 MiB parts, abandoned after a day) over the
 * in-memory fakes, with predictable ids: the set-up the multipart and sweeper tests share.
 */
export function multipartFixture() {
  const images = new MemoryImages();
  const objects = new MemoryObjects();
  const clock = fixedClock();
  const storage = new MemoryMultipartUploads(objects, clock);
  const common = { images, objects, uploads: storage, clock, log: silentLog };
  const multipart = createMultipartUploads({
    ...common,
    threshold: 8 * MIB,
    minPartSize: 5 * MIB,
    partUrlTtlSeconds: 600,
    abandonAfterSeconds: 24 * 3600,
  });
  let n = 0;
  const service = createImageService({
    images,
    objects,
    clock,
    log: silentLog,
    newId: () => `00000000-0000-4000-8000-${String(++n).padStart(12, "0")}`,
    uploadUrlTtlSeconds: 3600,
    downloadUrlTtlSeconds: 300,
    multipart,
  });
  return { common, images, objects, storage, multipart, service, clock };
}

/** A complete image record for pure-logic tests: an active, shared raw image of 100 bytes, with `over` applied. */
export function imageRecord(over: Partial<ImageRecord> = {}): ImageRecord {
  return {
    ...blankRecord("00000000-0000-4000-8000-000000000000", "p", "2026-01-01T00:00:00.000Z"),
    status: "active",
    disk_format: "raw",
    container_format: "bare",
    size: 100,
    ...over,
  };
}
