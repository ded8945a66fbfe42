import { lambdaHandler } from "../adapters/observability/lambda.ts";
import { loadReconcilerConfig } from "../config.ts";
import { createReconcilerFunction } from "../roots/reconciler.ts";

const reconciler = createReconcilerFunction(loadReconcilerConfig(process.env));

/** Scheduled: recompute quota usage from records and storage, log drift, repair it. */
export const handler = lambdaHandler(async (): Promise<void> => {
  const report = await reconciler.quotas.reconcile("system", { repair: true });
  const drifted = report.projects.filter((p) => Object.values(p.drift).some((v) => v !== 0));
  reconciler.log.info("reconciliation done", {
    projects: report.projects.length,
    drifted: drifted.map((p) => ({ project: p.project, drift: p.drift, repaired: p.repaired })),
    orphans: report.orphans.length,
    orphanUploads: report.orphanUploads.length,
    mismatches: report.mismatches.length,
  });
});
