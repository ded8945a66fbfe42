import { afterEach, describe, expect, it } from "vitest";
import { createMetrics, emfLine, MetricUnit } from "../../../functions/adapters/observability/metrics.ts";

const saved = { ...process.env };
afterEach(() => {
  process.env = { ...saved };
});

describe("metrics as CloudWatch embedded metric format lines", () => {
  it("one metric per line: its value and dimensions as fields, _aws naming them, service first", () => {
    const line = emfLine(
      "Hangar",
      "hangar",
      "ApiLatency",
      MetricUnit.Milliseconds,
      12.5,
      { route: "GET /v2" },
      1000,
    );
    expect(line.endsWith("\n")).toBe(true);
    expect(JSON.parse(line)).toEqual({
      _aws: {
        Timestamp: 1000,
        CloudWatchMetrics: [
          {
            Namespace: "Hangar",
            Dimensions: [["service", "route"]],
            Metrics: [{ Name: "ApiLatency", Unit: "Milliseconds" }],
          },
        ],
      },
      service: "hangar",
      route: "GET /v2",
      ApiLatency: 12.5,
    });
  });

  it("writes each metric at once, in the namespace POWERTOOLS_METRICS_NAMESPACE names, none when disabled", () => {
    const lines: string[] = [];
    process.env.POWERTOOLS_METRICS_NAMESPACE = "Other";
    createMetrics("hangar", (l) => lines.push(l)).add("Imports", MetricUnit.Count, 1, { outcome: "active" });
    expect(lines).toHaveLength(1);
    const emf = JSON.parse(lines[0] ?? "");
    expect(emf._aws.CloudWatchMetrics[0].Namespace).toBe("Other");
    expect(emf).toMatchObject({ service: "hangar", outcome: "active", Imports: 1 });
    expect(emf._aws.CloudWatchMetrics[0].Metrics).toEqual([{ Name: "Imports", Unit: "Count" }]);

    delete process.env.POWERTOOLS_METRICS_NAMESPACE;
    createMetrics("hangar", (l) => lines.push(l)).add("Imports", MetricUnit.BytesPerSecond, 2);
    expect(JSON.parse(lines[1] ?? "")._aws.CloudWatchMetrics[0]).toMatchObject({
      Namespace: "Hangar",
      Metrics: [{ Name: "Imports", Unit: "Bytes/Second" }],
    });

    process.env.POWERTOOLS_METRICS_DISABLED = "true";
    createMetrics("hangar", (l) => lines.push(l)).add("Imports", MetricUnit.Count, 1);
    expect(lines).toHaveLength(2);
  });
});
