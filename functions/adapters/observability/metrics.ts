/** CloudWatch's metric units (the names the embedded metric format takes). */
export const MetricUnit = {
  Seconds: "Seconds",
  Microseconds: "Microseconds",
  Milliseconds: "Milliseconds",
  Bytes: "Bytes",
  Kilobytes: "Kilobytes",
  Megabytes: "Megabytes",
  Gigabytes: "Gigabytes",
  Terabytes: "Terabytes",
  Bits: "Bits",
  Kilobits: "Kilobits",
  Megabits: "Megabits",
  Gigabits: "Gigabits",
  Terabits: "Terabits",
  Percent: "Percent",
  Count: "Count",
  BytesPerSecond: "Bytes/Second",
  KilobytesPerSecond: "Kilobytes/Second",
  MegabytesPerSecond: "Megabytes/Second",
  GigabytesPerSecond: "Gigabytes/Second",
  TerabytesPerSecond: "Terabytes/Second",
  BitsPerSecond: "Bits/Second",
  KilobitsPerSecond: "Kilobits/Second",
  MegabitsPerSecond: "Megabits/Second",
  GigabitsPerSecond: "Gigabits/Second",
  TerabitsPerSecond: "Terabits/Second",
  CountPerSecond: "Count/Second",
  NoUnit: "None",
} as const;
export type Unit = (typeof MetricUnit)[keyof typeof MetricUnit];

/** CloudWatch namespace of every Hangar metric (`POWERTOOLS_METRICS_NAMESPACE` overrides it). */
export const NAMESPACE = "Hangar";

/** Records metrics; each call is one metric with its own dimensions. */
export interface MetricRecorder {
  add(name: string, unit: Unit, value: number, dimensions?: Readonly<Record<string, string>>): void;
}

/**
 * One metric as a line of CloudWatch's embedded metric format: the metric's value and its dimensions as
 * top-level fields, `_aws` naming which fields are dimensions and the metric's unit. The `service`
 * dimension comes first, as Powertools Metrics wrote it.
 */
export function emfLine(
  namespace: string,
  service: string,
  name: string,
  unit: Unit,
  value: number,
  dimensions: Readonly<Record<string, string>>,
  timestamp: number,
): string {
  const fields: Record<string, string | number> = { service, ...dimensions };
  const line = {
    _aws: {
      Timestamp: timestamp,
      CloudWatchMetrics: [
        { Namespace: namespace, Dimensions: [Object.keys(fields)], Metrics: [{ Name: name, Unit: unit }] },
      ],
    },
    ...fields,
    [name]: value,
  };
  return `${JSON.stringify(line)}\n`;
}

/**
 * Metrics in CloudWatch's embedded metric format: one JSON line on stdout per metric, which CloudWatch
 * Logs turns into a metric in AWS; locally the same lines are in the stack's log. Each metric is written
 * at once, so nothing is lost when a function ends. The lines are the ones Powertools Metrics' single
 * metrics wrote (`POWERTOOLS_METRICS_NAMESPACE`, `POWERTOOLS_METRICS_DISABLED` as it read them), written
 * directly: building a Powertools single metric for each request was a visible share of a request's CPU
 * in the api's profiles under load.
 */
export function createMetrics(
  service: string,
  write: (line: string) => void = (l) => process.stdout.write(l),
) {
  const namespace = process.env.POWERTOOLS_METRICS_NAMESPACE || NAMESPACE;
  const disabled = process.env.POWERTOOLS_METRICS_DISABLED?.toLowerCase() === "true";
  const recorder: MetricRecorder = {
    add(name, unit, value, dimensions = {}) {
      if (disabled) return;
      write(emfLine(namespace, service, name, unit, value, dimensions, Date.now()));
    },
  };
  return recorder;
}
