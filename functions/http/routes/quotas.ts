import type { Context, Hono } from "hono";
import * as z from "zod/mini";
import { InvalidRequestError } from "../../core/errors.ts";
import type { Caller } from "../../core/image/access.ts";
import { MAX_NAME } from "../../core/image/fields.ts";
import { once } from "../../core/once.ts";
import { QUOTA_KEYS } from "../../core/quota.ts";
import type { ProjectUsage, QuotaService } from "../../core/quota-service.ts";
import { jsonBody } from "../validate.ts";

type Env = { Variables: { caller: Caller } };

/** Overrides an admin may set; null restores the operator default, -1 is unlimited. */
export const LimitsBody = once(() =>
  z.strictObject(
    Object.fromEntries(
      QUOTA_KEYS.map((k) => [k, z.optional(z.nullable(z.number().check(z.int(), z.minimum(-1))))]),
    ),
  ),
);

/** A project id from a path or query, at most 255 characters like every name (it becomes a storage key). */
function projectName(value: string): string {
  if (value.length === 0 || value.length > MAX_NAME) {
    throw new InvalidRequestError(
      `A project id is 1 to ${MAX_NAME} characters long; got ${value.length}.`,
      "INVALID_PROJECT",
    );
  }
  return value;
}

/** Glance's `/v2/info/usage` shape: each counter with its limit and usage. */
export function usageJson(u: ProjectUsage) {
  return {
    project_id: u.project,
    usage: Object.fromEntries(QUOTA_KEYS.map((k) => [k, { limit: u.limits[k], usage: u.usage[k] }])),
  };
}

/**
 * `/v2/info/usage` (Glance's, plus `?project_id=` for admins) and Hangar's `/v2/quotas` for admins:
 * every project's usage including staged bytes, and per-project limit overrides.
 */
export function registerQuotaRoutes(app: Hono<Env>, deps: { quotas: QuotaService }): void {
  const { quotas } = deps;
  const project = (c: Context<Env>) => projectName(c.req.param("project") ?? "");

  app.get("/v2/info/usage", async (c) => {
    const which = c.req.query("project_id");
    return c.json(usageJson(await quotas.usage(c.get("caller"), which ? projectName(which) : undefined)));
  });

  app.get("/v2/quotas", async (c) => {
    const all = await quotas.listUsage(c.get("caller"));
    return c.json({ projects: all.map(usageJson) });
  });

  app.post("/v2/quotas/reconcile", async (c) => {
    const repair = c.req.query("repair") !== "false";
    return c.json(await quotas.reconcile(c.get("caller"), { repair }));
  });

  app.get("/v2/quotas/:project", async (c) =>
    c.json(usageJson(await quotas.usage(c.get("caller"), project(c)))),
  );

  app.put("/v2/quotas/:project", ...jsonBody(LimitsBody, "limits"), async (c) => {
    const limits = c.req.valid("json");
    return c.json(usageJson(await quotas.setLimits(c.get("caller"), project(c), limits)));
  });
}
