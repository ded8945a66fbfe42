import type { Context } from "hono";
import { type MetricRecorder, MetricUnit } from "../adapters/observability/metrics.ts";
import { writeTogether } from "../adapters/observability/stdout.ts";
import type { Caller } from "../core/image/access.ts";
import type { Logger } from "../core/ports.ts";
import { QuotaExceededError } from "../core/quota.ts";

type Deps = { log: Logger; metrics?: MetricRecorder };

/**
 * One log line and one latency metric per request: method, route (the pattern, e.g. `/v2/images/:id`, so
 * ids do not make every request a metric of its own), status, duration and the caller's project.
 */
export function observeRequest(
  c: Context<{ Variables: { caller: Caller } }>,
  requestId: string,
  ms: number,
  deps: Deps,
): void {
  const route = c.req.routePath === "*" || c.req.routePath === "/*" ? "unmatched" : c.req.routePath;
  const status = c.res.status;
  // The request's log line and its metric line leave in one write.
  writeTogether(() => {
    deps.log.info("request", {
      request_id: requestId,
      method: c.req.method,
      route,
      status,
      ms: Math.round(ms * 10) / 10,
      project: c.get("caller")?.projectId,
    });
    deps.metrics?.add("ApiLatency", MetricUnit.Milliseconds, ms, {
      route: `${c.req.method} ${route}`,
      status_class: `${Math.floor(status / 100)}xx`,
    });
  });
}

/** Errors worth counting on their own: quota refusals, by limit. */
export function observeError(err: unknown, deps: Deps): void {
  if (err instanceof QuotaExceededError) {
    deps.metrics?.add("QuotaRefusals", MetricUnit.Count, 1, { limit: err.key });
  }
}
