import { ForbiddenError } from "./errors.ts";
import { type Caller, isAdmin } from "./image/access.ts";
import { imageIdFromStagingKey } from "./image/image.ts";
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
  /** Objects under `staging/` or `images/` that belong to no image record. */
  orphans: string[];
  /** Images whose stored object's size differs from what their record says. */
  mismatches: { imageId: string; key: string; recordSays: number; storageHas: number }[];
}

export interface QuotaServiceDeps {
  quota: QuotaStore;
  images: ImageRepository;
  objects: ObjectStore;
  log: Logger;
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
    const [usage, limits] = await Promise.all([quota.usage(project), quota.limits(project)]);
    return { project, usage, limits };
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
      const recomputed = new Map<string, Counters>();
      const storage = new Map<string, { staged: number; stored: number }>();
      for (const r of records) {
        const sum = recomputed.get(r.owner) ?? { ...ZERO };
        const held = heldBy(r);
        for (const k of QUOTA_KEYS) sum[k] += held[k];
        recomputed.set(r.owner, sum);
      }
      const orphans: string[] = [];
      const mismatches: ReconcileReport["mismatches"] = [];
      for (const prefix of ["staging/", "images/"] as const) {
        for await (const obj of deps.objects.list(prefix)) {
          const id = prefix === "images/" ? obj.key.slice("images/".length) : imageIdFromStagingKey(obj.key);
          const image = id !== undefined ? owners.get(id) : undefined;
          if (!image || image.status === "deleted") {
            orphans.push(obj.key);
            continue;
          }
          const s = storage.get(image.owner) ?? { staged: 0, stored: 0 };
          if (prefix === "staging/") s.staged += obj.size;
          else {
            s.stored += obj.size;
            if (image.size !== null && image.size !== obj.size && image.status !== "importing") {
              mismatches.push({
                imageId: image.id,
                key: obj.key,
                recordSays: image.size,
                storageHas: obj.size,
              });
            }
          }
          storage.set(image.owner, s);
        }
      }
      const projects = new Set([...recomputed.keys(), ...(await quota.listProjects())]);
      const report: ReconcileReport = { projects: [], orphans, mismatches };
      for (const project of [...projects].sort()) {
        const recorded = await quota.usage(project);
        const want = recomputed.get(project) ?? { ...ZERO };
        const drift = difference(want, recorded);
        let repaired = false;
        if (!isZero(drift) && options.repair) {
          repaired = await quota.replaceUsage(project, recorded, want);
          deps.log.warn("quota usage drift", { project, recorded, recomputed: want, repaired });
        }
        report.projects.push({
          project,
          recorded,
          recomputed: want,
          drift,
          repaired,
          storage: storage.get(project) ?? { staged: 0, stored: 0 },
        });
      }
      return report;
    },
  };
}

export type QuotaService = ReturnType<typeof createQuotaService>;
