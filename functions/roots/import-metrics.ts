import { type MetricRecorder, MetricUnit } from "../adapters/observability/metrics.ts";
import type { ImportOutcome } from "../core/import/import-uploaded-image.ts";
import type { Logger } from "../core/ports.ts";

/**
 * What one finished import leaves for operators: one log line (`import result`, which the local stack
 * prints as a sentence) and its metrics — imports by outcome and reason, bytes read and written, duration
 * and throughput, conversions by source format.
 */
export function recordImport(
  outcome: ImportOutcome,
  ms: number,
  deps: { log: Logger; metrics: MetricRecorder },
): void {
  if (outcome.outcome === "ignored") return;
  const { image } = outcome;
  const read = image.import_progress?.bytes_read ?? 0;
  const reason = image.failure?.reason ?? "none";
  const source = image.source_format ?? "unknown";
  deps.log.info("import result", {
    imageId: image.id,
    request_id: image.request_id ?? undefined,
    outcome: outcome.outcome,
    reason: image.failure?.reason,
    sourceFormat: image.source_format,
    diskFormat: image.disk_format,
    converted: image.converted,
    bytesRead: read,
    bytesWritten: image.size,
    virtualSize: image.virtual_size,
    ms: Math.round(ms),
    // When this object's handling began (event in hand): with the other lines' timestamps, where the
    // time between the upload's completion and `active` went (delivery, lease, import, final write).
    startedAt: new Date(Date.now() - ms).toISOString(),
  });
  const { add } = deps.metrics;
  add("Imports", MetricUnit.Count, 1, { outcome: outcome.outcome, reason });
  add("ImportDuration", MetricUnit.Milliseconds, ms, { outcome: outcome.outcome });
  if (outcome.outcome !== "active") return;
  add("ImportBytesRead", MetricUnit.Bytes, read);
  add("ImportBytesWritten", MetricUnit.Bytes, image.size ?? 0);
  if (ms > 0) add("ImportThroughput", MetricUnit.BytesPerSecond, (read * 1000) / ms);
  if (image.converted) {
    add("Conversions", MetricUnit.Count, 1, { source_format: source, disk_format: image.disk_format ?? "" });
  }
}
