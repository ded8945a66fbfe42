import { Metrics } from "@aws-lambda-powertools/metrics";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createMetrics, MetricUnit } from "../../../functions/adapters/observability/metrics.ts";
import { writeTogether } from "../../../functions/adapters/observability/stdout.ts";

/** What `fn` writes to stdout, one string per write, with the EMF timestamp fixed. */
function written(fn: () => void): string[] {
  const writes: string[] = [];
  const spy = vi.spyOn(process.stdout, "write").mockImplementation(((chunk: unknown) => {
    writes.push(String(chunk).replace(/"Timestamp":\d+/g, '"Timestamp":0'));
    return true;
  }) as typeof process.stdout.write);
  try {
    fn();
  } finally {
    spy.mockRestore();
  }
  return writes;
}

describe("EMF metrics", () => {
  afterEach(() => vi.restoreAllMocks());

  it("write the line Powertools' single-metric set writes, dimensions of one metric never on the next", () => {
    const reference = new Metrics({ namespace: "Hangar", serviceName: "hangar" });
    const single = (name: string, value: number, dimensions: Record<string, string> = {}) => {
      const one = reference.singleMetric();
      for (const [k, v] of Object.entries(dimensions)) one.addDimension(k, v);
      one.addMetric(name, MetricUnit.Count, value);
    };
    const metrics = createMetrics("hangar");
    const cases: [string, number, Record<string, string>?][] = [
      ["ApiLatency", 12.5, { route: "GET /v2/images/:id", status_class: "2xx" }],
      ["QuotaRefusals", 1, { limit: "image_count_total" }],
      ["LifecycleEventsNotPublished", 2],
    ];
    for (const [name, value, dimensions] of cases) {
      const ours = written(() => metrics.add(name, MetricUnit.Count, value, dimensions));
      expect(ours).toHaveLength(1);
      expect(ours).toEqual(written(() => single(name, value, dimensions)));
    }
    const line = JSON.parse(written(() => metrics.add("After", MetricUnit.Count, 1))[0] ?? "{}");
    expect(line._aws.CloudWatchMetrics[0].Dimensions).toEqual([["service"]]);
  });

  it("a refused metric leaves none of its dimensions to the next one", () => {
    const metrics = createMetrics("hangar");
    expect(() => metrics.add("", MetricUnit.Count, 1, { leaked: "yes" })).toThrow();
    const [line] = written(() => metrics.add("Good", MetricUnit.Count, 1));
    expect(JSON.parse(line ?? "{}")).not.toHaveProperty("leaked");
  });
});

describe("writeTogether", () => {
  it("sends the lines written inside it to stdout in one write, before it returns", () => {
    const writes: string[] = [];
    // The stream's own batch write: what a corked stream calls once with every chunk held.
    const stream = process.stdout as unknown as {
      _writev: (chunks: { chunk: unknown }[], callback: () => void) => void;
    };
    const spy = vi.spyOn(stream, "_writev").mockImplementation((chunks, callback) => {
      writes.push(chunks.map((c) => String(c.chunk)).join(""));
      callback();
    });
    try {
      writeTogether(() => {
        process.stdout.write("one\n");
        process.stdout.write("two\n");
      });
      expect(writes).toEqual(["one\ntwo\n"]);
    } finally {
      spy.mockRestore();
    }
  });
});
