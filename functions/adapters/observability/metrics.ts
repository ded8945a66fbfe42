import { Metrics, MetricUnit } from "@aws-lambda-powertools/metrics";

export { MetricUnit };
export type Unit = (typeof MetricUnit)[keyof typeof MetricUnit];

/** CloudWatch namespace of every Hangar metric (`POWERTOOLS_METRICS_NAMESPACE` overrides it). */
export const NAMESPACE = "Hangar";

/** Records metrics; each call is one metric with its own dimensions. */
export interface MetricRecorder {
  add(name: string, unit: Unit, value: number, dimensions?: Readonly<Record<string, string>>): void;
}

let metrics: Metrics | undefined;

/**
 * Metrics in CloudWatch's embedded metric format (Powertools Metrics): one JSON line on stdout per
 * metric, which CloudWatch Logs turns into a metric in AWS; locally the same lines are in the stack's log.
 * Each metric is written at once, so nothing is lost when a function ends.
 */
export function createMetrics(service: string): MetricRecorder {
  metrics ??= new Metrics({
    namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? NAMESPACE,
    serviceName: service,
  });
  const root = metrics;
  return {
    add(name, unit, value, dimensions = {}) {
      // The one instance, stored and published in one synchronous step, writes the line Powertools'
      // `singleMetric()` would, without building a Metrics object (and its console) per metric: that
      // was about a twentieth of a small request's CPU. Nothing else stores metrics on it.
      try {
        for (const [key, v] of Object.entries(dimensions)) root.addDimension(key, v);
        root.addMetric(name, unit, value);
        root.publishStoredMetrics();
      } catch (err) {
        // A refused metric (bad name or value) leaves no dimension behind for the next one.
        root.clearMetrics();
        root.clearDimensions();
        throw err;
      }
    },
  };
}
