import { HangarError } from "./errors.ts";
import type { ImageRecord } from "./image/image.ts";

/** Glance's unified-limit names; every byte in `staging/` and `images/` counts against its project. */
export const QUOTA_KEYS = [
  "image_size_total",
  "image_stage_total",
  "image_count_total",
  "image_count_uploading",
] as const;
export type QuotaKey = (typeof QUOTA_KEYS)[number];
export type Counters = Record<QuotaKey, number>;
/** Limits per counter; -1 means unlimited. */
export type Limits = Counters;

export const ZERO: Readonly<Counters> = Object.freeze({
  image_size_total: 0,
  image_stage_total: 0,
  image_count_total: 0,
  image_count_uploading: 0,
});

export const UNLIMITED: Readonly<Limits> = Object.freeze({
  image_size_total: -1,
  image_stage_total: -1,
  image_count_total: -1,
  image_count_uploading: -1,
});

/**
 * What one image holds against its project's quota, as a function of its record alone, so every write
 * that changes the record can change the project's usage by the difference in the same transaction.
 * A declared `upload_size` is reserved while `queued`; the staged object's actual size is held while
 * `importing`; stored bytes count once `active` (or `deactivated`).
 */
export function heldBy(image: ImageRecord): Counters {
  const live = image.status !== "deleted";
  const queuedWithSize = image.status === "queued" && image.upload_size !== null;
  const importing = image.status === "importing";
  const stored = image.status === "active" || image.status === "deactivated";
  return {
    image_count_total: live ? 1 : 0,
    image_count_uploading: queuedWithSize || importing ? 1 : 0,
    image_stage_total: queuedWithSize
      ? (image.upload_size ?? 0)
      : importing
        ? (image.import_progress?.total ?? image.upload_size ?? 0)
        : 0,
    image_size_total: stored ? (image.size ?? 0) : 0,
  };
}

export function difference(from: Counters, to: Counters): Counters {
  return {
    image_size_total: to.image_size_total - from.image_size_total,
    image_stage_total: to.image_stage_total - from.image_stage_total,
    image_count_total: to.image_count_total - from.image_count_total,
    image_count_uploading: to.image_count_uploading - from.image_count_uploading,
  };
}

export const isZero = (c: Counters): boolean => QUOTA_KEYS.every((k) => c[k] === 0);

/** The first counter that `delta` would push over its limit, if any. */
export function overLimit(usage: Counters, delta: Counters, limits: Limits): QuotaKey | undefined {
  return QUOTA_KEYS.find((k) => delta[k] > 0 && limits[k] >= 0 && usage[k] + delta[k] > limits[k]);
}

const UNITS: Record<QuotaKey, string> = {
  image_size_total: "bytes",
  image_stage_total: "bytes",
  image_count_total: "images",
  image_count_uploading: "images",
};

/** A change would take a project over one of its limits. The message carries the numbers. */
export class QuotaExceededError extends HangarError {
  readonly reason = "QUOTA_EXCEEDED";
  constructor(
    readonly project: string,
    readonly key: QuotaKey,
    readonly limit: number,
    readonly usage: number,
    readonly requested: number,
  ) {
    super(
      `Quota exceeded for ${key} of project ${project}: ${usage} ${UNITS[key]} in use + ${requested} requested ` +
        `> limit ${limit}.`,
    );
  }
}

/** Per-project usage and limits (limits = operator defaults overridden per project by an admin). */
export interface QuotaStore {
  usage(project: string): Promise<Counters>;
  /**
   * The project's limits. They may be a copy read a short while ago (the store says how long); with
   * `fresh`, they are read now.
   */
  limits(project: string, options?: { fresh?: boolean }): Promise<Limits>;
  /** Sets overrides; a value of null removes the override (back to the default). */
  setLimits(project: string, overrides: Partial<Record<QuotaKey, number | null>>): Promise<Limits>;
  /** Every project with usage or overrides. */
  listProjects(): Promise<string[]>;
  /** Replaces a project's usage if it still equals `expected` (reconciliation). */
  replaceUsage(project: string, expected: Counters, next: Counters): Promise<boolean>;
}
