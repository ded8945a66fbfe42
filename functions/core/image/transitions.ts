import type { ImageStatus } from "./image.ts";

/**
 * The image lifecycle. Every change of status is one of these edges, written with a condition on the
 * current status so duplicate or late events cannot move an image twice.
 */
export const TRANSITIONS = {
  startImport: { from: ["queued"], to: "importing" },
  finishImport: { from: ["importing"], to: "active" },
  failImport: { from: ["importing", "queued"], to: "killed" },
  /** A transient failure gives the image back so the retried event can take it again. */
  releaseImport: { from: ["importing"], to: "queued" },
  /**
   * A web-download has staged the bytes: the image stays `importing` (so no second import can start)
   * and its lease becomes `HANDED_OVER`, which the importer takes at once and does not count as a
   * takeover.
   */
  handOverImport: { from: ["importing"], to: "importing" },
  deactivate: { from: ["active", "deactivated"], to: "deactivated" },
  reactivate: { from: ["deactivated", "active"], to: "active" },
  delete: { from: ["queued", "importing", "active", "killed", "deactivated"], to: "deleted" },
} as const satisfies Record<string, { from: readonly ImageStatus[]; to: ImageStatus }>;

/**
 * The lease of an image whose holder has handed it to the importer: long expired, so the importer's
 * storage event takes the image without waiting, and the sweeper re-drives it like any lapsed lease.
 */
export const HANDED_OVER = "1970-01-01T00:00:00.000Z";

export type TransitionName = keyof typeof TRANSITIONS;
