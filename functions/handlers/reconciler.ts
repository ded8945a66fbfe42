import { loadConfig } from "../config.ts";
import { createHangar } from "../wiring.ts";

const hangar = createHangar(loadConfig(process.env));

/** Scheduled: recompute quota usage from records and storage, log drift, repair it. */
export const handler = async (): Promise<void> => {
  const report = await hangar.quotas.reconcile("system", { repair: true });
  const drifted = report.projects.filter((p) => Object.values(p.drift).some((v) => v !== 0));
  hangar.log.info("reconciliation done", {
    projects: report.projects.length,
    drifted: drifted.map((p) => ({ project: p.project, drift: p.drift, repaired: p.repaired })),
    orphans: report.orphans.length,
    mismatches: report.mismatches.length,
  });
};
