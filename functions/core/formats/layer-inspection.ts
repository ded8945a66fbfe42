import { type CaptureBudget, StreamLayer } from "./capture.ts";
import { CHECK, fail, failureMessage, pass } from "./checks.ts";
import { MalformedImageError, UnsafeImageError, UnsupportedFormatError } from "./errors.ts";
import {
  type FormatModule,
  type FormatReport,
  type FormatSession,
  PROBE_HEAD_BYTES,
  PROBE_TAIL_BYTES,
} from "./format-module.ts";
import { detectPartitionTable, rawVirtualSize } from "./raw.ts";
import { FORMAT_MODULES } from "./registry.ts";
import type { CheckResult, FormatName, PartitionTable } from "./types.ts";
import { UNSUPPORTED_FORMATS } from "./unsupported.ts";

/** Names of the formats whose probes match, supported ones first; raw never appears. */
export function probeAll(
  head: Uint8Array,
  tail: Uint8Array,
  size: number,
): { supported: FormatModule[]; unsupported: string[] } {
  const h = head.subarray(0, PROBE_HEAD_BYTES);
  const t = tail.subarray(Math.max(0, tail.length - PROBE_TAIL_BYTES));
  return {
    supported: FORMAT_MODULES.filter((m) => m.probe(h, t, size)),
    unsupported: UNSUPPORTED_FORMATS.filter((m) => m.probe(h, t, size)).map((m) => m.name),
  };
}

/** Refuses a polyglot or an unsupported format; returns the single matching module, if any. */
export function decideFormat(
  supported: readonly FormatModule[],
  unsupported: readonly string[],
  checks: CheckResult[],
): FormatModule | undefined {
  const names = [...supported.map((m) => m.name), ...unsupported];
  if (names.length > 1) {
    const result = fail(
      CHECK.polyglot,
      `the image is valid as more than one format (${names.join(", ")}); such images can be read differently by different tools and are refused`,
    );
    checks.push(result);
    throw new UnsafeImageError(result.name, failureMessage(result), checks);
  }
  checks.push(pass(CHECK.polyglot));
  const [only] = unsupported;
  if (only !== undefined) {
    throw new UnsupportedFormatError(only, `the image is in ${only} format, which Hangar does not accept`);
  }
  return supported[0];
}

export interface LayerOutcome {
  format: FormatName;
  virtualSize: number;
  subformat?: string;
  partitionTable?: PartitionTable;
  checks: CheckResult[];
}

/**
 * One stream under inspection: its capture layer and a session per format. A session that throws
 * while streaming is set aside with its error; the error matters only if that format matches.
 */
export class LayerInspection {
  readonly layer: StreamLayer;
  private readonly sessions: { module: FormatModule; session: FormatSession; error?: unknown }[];

  constructor(budget: CaptureBudget, sizeHint?: number) {
    this.layer = new StreamLayer(budget, sizeHint);
    this.sessions = FORMAT_MODULES.map((module) => ({ module, session: module.open(this.layer) }));
  }

  push(chunk: Uint8Array): void {
    this.layer.push(chunk);
    for (const s of this.sessions) {
      if (s.error !== undefined) continue;
      try {
        s.session.advance();
      } catch (error) {
        s.error = error;
      }
    }
    this.layer.releaseChunk();
  }

  /** Ends the stream and runs the checks; throws the first failure. */
  conclude(maxVirtualSize: number, checks: CheckResult[]): LayerOutcome {
    this.layer.end();
    const size = this.layer.position;
    const { supported, unsupported } = probeAll(this.layer.head(), this.layer.tail(), size);
    const module = decideFormat(supported, unsupported, checks);
    let report: FormatReport;
    if (module === undefined) {
      const partitionTable = detectPartitionTable(this.layer.head());
      report = {
        virtualSize: rawVirtualSize(size),
        ...(partitionTable ? { partitionTable } : {}),
        checks: [],
      };
    } else {
      const entry = this.sessions.find((s) => s.module === module);
      try {
        if (entry?.error !== undefined) throw entry.error;
        report = (entry as { session: FormatSession }).session.report();
      } catch (error) {
        if (error instanceof UnsupportedFormatError) throw error;
        const detail =
          error instanceof MalformedImageError
            ? `${error.message}; the image's metadata cannot be read safely`
            : `${module.name}: unreadable metadata`;
        const result = fail(CHECK.malformedHeader, detail);
        checks.push(result);
        throw new UnsafeImageError(result.name, failureMessage(result), checks, { cause: error });
      }
    }
    checks.push(pass(CHECK.malformedHeader), ...report.checks);
    const sizeCheck = virtualSizeCheck(report.virtualSize, maxVirtualSize);
    checks.push(sizeCheck);
    const failed = checks.find((c) => !c.passed);
    if (failed !== undefined) throw new UnsafeImageError(failed.name, failureMessage(failed), checks);
    return {
      format: module?.name ?? "raw",
      virtualSize: Number(report.virtualSize),
      ...(report.subformat === undefined ? {} : { subformat: report.subformat }),
      ...(report.partitionTable === undefined ? {} : { partitionTable: report.partitionTable }),
      checks,
    };
  }
}

function virtualSizeCheck(virtualSize: bigint, max: number): CheckResult {
  if (virtualSize === 0n) return fail(CHECK.virtualSize, "the image's virtual size is 0 bytes");
  if (virtualSize > BigInt(max)) {
    return fail(
      CHECK.virtualSize,
      `the image's virtual size (${virtualSize} bytes) is above the limit of ${max} bytes`,
    );
  }
  return pass(CHECK.virtualSize, `${virtualSize} bytes`);
}
