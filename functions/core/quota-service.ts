import { ForbiddenError } from "./errors.ts";
import { type Caller, isAdmin } from "./image/access.ts";
import {
  type ImageRecord,
  type ImageStatus,
  imageIdFromStagingKey,
  imageKey,
  spoolKey,
  stagingKey,
  storedObject,
} from "./image/image.ts";
import { writeKeyOwner } from "./leftovers.ts";
import type { ImageRepository, Logger, ObjectStore } from "./ports.ts";
import {
  type Counters,
  difference,
  heldBy,
  isZero,
  type Limits,
  QUOTA_KEYS,
  type QuotaKey,
  type QuotaStore,
  ZERO,
} from "./quota.ts";

export interface ProjectUsage {
  project: string;
  usage: Counters;
  limits: Limits;
}

export interface ReconcileReport {
  projects: {
    project: string;
    recorded: Counters;
    recomputed: Counters;
    drift: Counters;
    repaired: boolean;
    /** Bytes actually in storage for the project's images: staged uploads and stored images. */
    storage: { staged: number; stored: number };
  }[];
  /**
   * Objects under `staging/`, `images/` or `spool/` that no live image owns: no record, or one whose
   * status holds no such object (a staged upload of an image already imported, a spool after its import).
   */
  orphans: string[];
  /** Multipart uploads in progress that no live image owns (see `owns`). */
  orphanUploads: { key: string; uploadId: string; imageId: string | null; status: ImageStatus | null }[];
  /** Images whose stored object's size differs from what their record says. */
  mismatches: { imageId: string; key: string; recordSays: number; storageHas: number }[];
}

export interface QuotaServiceDeps {
  quota: QuotaStore;
  images: ImageRepository;
  objects: ObjectStore;
  log: Logger;
}

type Area = "staging" | "images" | "spool";
const AREAS: readonly Area[] = ["staging", "images", "spool"];

/** Which image a key under one of the areas belongs to, if Hangar generated it. */
function ownerOf(area: Area, key: string): string | undefined {
  return area === "staging" ? imageIdFromStagingKey(key) : writeKeyOwner(key);
}

/**
 * Whether an image in `status` owns storage in `area`: staged bytes while it waits for or runs its import,
 * the stored image from its import on, a spool only while importing. An upload in progress (`upload`) is
 * owned only while someone still writes it: the client while `queued`, the importer while `importing`.
 */
function owns(status: ImageStatus, area: Area, upload: boolean): boolean {
  if (area === "staging") return upload ? status === "queued" : status === "queued" || status === "importing";
  if (area === "spool" || upload) return status === "importing";
  return status === "importing" || status === "active" || status === "deactivated";
}

/** The keys an image may write to, by area. */
const keysOf = (r: ImageRecord): [Area, string][] => [
  ["staging", stagingKey(r.id)],
  ["images", imageKey(r.id)],
  ["spool", spoolKey(r.id)],
];

/** What a storage walk finds (see `scanStorage`). */
interface StorageScan {
  orphans: string[];
  mismatches: ReconcileReport["mismatches"];
  /** Per project: bytes staged and stored. */
  bytes: Map<string, { staged: number; stored: number }>;
}

/** Counts an owned staged or stored object for its project, and notes a stored size its record disagrees with. */
function countObject(
  scan: StorageScan,
  area: "staging" | "images",
  image: ImageRecord,
  obj: { key: string; size: number },
): void {
  const s = scan.bytes.get(image.owner) ?? { staged: 0, stored: 0 };
  scan.bytes.set(image.owner, s);
  if (area === "staging") {
    s.staged += obj.size;
    return;
  }
  s.stored += obj.size;
  if (image.size !== null && image.size !== obj.size && image.status !== "importing") {
    scan.mismatches.push({ imageId: image.id, key: obj.key, recordSays: image.size, storageHas: obj.size });
  }
}

/** Each project's usage as the sum of what its images hold. */
function recomputeUsage(records: ImageRecord[]): Map<string, Counters> {
  const sums = new Map<string, Counters>();
  for (const r of records) {
    const sum = sums.get(r.owner) ?? { ...ZERO };
    const held = heldBy(r);
    for (const k of QUOTA_KEYS) sum[k] += held[k];
    sums.set(r.owner, sum);
  }
  return sums;
}

/** Quota use cases: who may see or set usage and limits, and reconciliation against records and storage. */
export function createQuotaService(deps: QuotaServiceDeps) {
  const { quota } = deps;

  function checkMayRead(caller: Caller, project: string): void {
    if (project !== caller.projectId && !isAdmin(caller)) {
      throw new ForbiddenError("Only admins may see another project's usage.", "FORBIDDEN");
    }
  }

  async function projectUsage(project: string): Promise<ProjectUsage> {
    const [usage, limits] = await Promise.all([quota.usage(project), quota.limits(project, { fresh: true })]);
    return { project, usage, limits };
  }

  /**
   * Multipart uploads in progress that no live image owns. S3 lists them by prefix; MinIO only by whole
   * key, so every live image's keys are asked as well (uploads of images whose record is gone are then
   * found on S3 only, where the bucket's lifecycle rule also aborts them).
   */
  async function uploadsNobodyOwns(
    records: ImageRecord[],
    owners: Map<string, ImageRecord>,
  ): Promise<ReconcileReport["orphanUploads"]> {
    const found = new Map<string, { key: string; uploadId: string; area: Area }>();
    for (const area of AREAS) {
      for (const u of await deps.objects.listUploads(`${area}/`)) found.set(u.uploadId, { ...u, area });
    }
    const keys = records.filter((r) => r.status !== "deleted").flatMap(keysOf);
    for (const [area, key] of keys) {
      for (const u of await deps.objects.listUploads(key)) {
        if (u.key === key) found.set(u.uploadId, { ...u, area });
      }
    }
    const out: ReconcileReport["orphanUploads"] = [];
    for (const u of found.values()) {
      const id = ownerOf(u.area, u.key);
      const image = id !== undefined ? owners.get(id) : undefined;
      if (image && owns(image.status, u.area, true)) continue;
      out.push({ key: u.key, uploadId: u.uploadId, imageId: id ?? null, status: image?.status ?? null });
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /**
   * Walks every object under the areas: the ones no live image owns, the stored ones whose size differs
   * from their record, and per project the bytes staged and stored.
   */
  async function scanStorage(owners: Map<string, ImageRecord>): Promise<StorageScan> {
    const scan: StorageScan = { orphans: [], mismatches: [], bytes: new Map() };
    for (const area of AREAS) {
      for await (const obj of deps.objects.list(`${area}/`)) {
        const id = ownerOf(area, obj.key);
        const image = id !== undefined ? owners.get(id) : undefined;
        // An image kept where it was uploaded holds its data under staging/: stored bytes, not staged ones.
        const keptHere = area === "staging" && image !== undefined && storedObject(image).key === obj.key;
        const as: Area = keptHere ? "images" : area;
        if (!image || !owns(image.status, as, false)) scan.orphans.push(obj.key);
        else if (as !== "spool") countObject(scan, as, image, obj);
      }
    }
    return scan;
  }

  /** Recorded against recomputed usage of one project; with `repair`, replaces drifted usage. */
  async function compare(project: string, want: Counters, repair: boolean) {
    const recorded = await quota.usage(project);
    const drift = difference(want, recorded);
    let repaired = false;
    if (!isZero(drift) && repair) {
      repaired = await quota.replaceUsage(project, recorded, want);
      deps.log.warn("quota usage drift", { project, recorded, recomputed: want, repaired });
    }
    return { project, recorded, recomputed: want, drift, repaired };
  }

  return {
    /** The caller's project usage, or (admins) any project's. */
    async usage(caller: Caller, project = caller.projectId): Promise<ProjectUsage> {
      checkMayRead(caller, project);
      return projectUsage(project);
    },

    /** Every project's usage and limits, staged bytes included; admins only. */
    async listUsage(caller: Caller): Promise<ProjectUsage[]> {
      if (!isAdmin(caller)) throw new ForbiddenError("Only admins may list every project's usage.");
      return Promise.all((await quota.listProjects()).map(projectUsage));
    },

    /** Overrides a project's limits (null restores the default); admins only. */
    async setLimits(
      caller: Caller,
      project: string,
      overrides: Partial<Record<QuotaKey, number | null>>,
    ): Promise<ProjectUsage> {
      if (!isAdmin(caller)) throw new ForbiddenError("Only admins may set quotas.");
      await quota.setLimits(project, overrides);
      deps.log.info("quota limits set", { project, overrides });
      return projectUsage(project);
    },

    /**
     * Recomputes every project's usage from the image records (what each image holds) and compares it with
     * the recorded usage and with the bytes in storage; with `repair`, replaces drifted usage — each only if
     * it did not change meanwhile, so a concurrent import is never overwritten.
     */
    async reconcile(caller: Caller | "system", options: { repair: boolean }): Promise<ReconcileReport> {
      if (caller !== "system" && !isAdmin(caller))
        throw new ForbiddenError("Only admins may reconcile usage.");
      const records = await deps.images.listAll();
      const owners = new Map(records.map((r) => [r.id, r]));
      const recomputed = recomputeUsage(records);
      const { orphans, mismatches, bytes } = await scanStorage(owners);
      const orphanUploads = await uploadsNobodyOwns(records, owners);
      const projects = new Set([...recomputed.keys(), ...(await quota.listProjects())]);
      const report: ReconcileReport = { projects: [], orphans, orphanUploads, mismatches };
      for (const project of [...projects].sort()) {
        const compared = await compare(project, recomputed.get(project) ?? { ...ZERO }, options.repair);
        report.projects.push({ ...compared, storage: bytes.get(project) ?? { staged: 0, stored: 0 } });
      }
      return report;
    },
  };
}

export type QuotaService = ReturnType<typeof createQuotaService>;
