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
  deactivate: { from: ["active", "deactivated"], to: "deactivated" },
  reactivate: { from: ["deactivated", "active"], to: "active" },
  delete: { from: ["queued", "importing", "active", "killed", "deactivated"], to: "deleted" },
} as const satisfies Record<string, { from: readonly ImageStatus[]; to: ImageStatus }>;

export type TransitionName = keyof typeof TRANSITIONS;
