import type { CheckResult } from "./types.ts";

/** Stable check names: they appear in failure messages, logs and docs/safety.md. */
export const CHECK = {
  malformedHeader: "malformed header",
  polyglot: "polyglot",
  virtualSize: "virtual size",
  gzipBomb: "gzip bomb",
  streamLength: "stream length",
  qcow2BackingFile: "qcow2 backing file",
  qcow2DataFile: "qcow2 external data file",
  qcow2UnknownFeatures: "qcow2 unknown incompatible features",
  qcow2TableBounds: "qcow2 table bounds",
  vmdkCreateType: "vmdk create type",
  vmdkExtentFile: "vmdk extent file",
  vmdkBackingFile: "vmdk backing file",
  vmdkTableBounds: "vmdk table bounds",
  vhdDifferencing: "vhd differencing",
  vhdTableBounds: "vhd table bounds",
  vhdxDifferencing: "vhdx differencing",
  vhdxTableBounds: "vhdx table bounds",
  vdiDifferencing: "vdi differencing",
  vdiTableBounds: "vdi table bounds",
  luksTableBounds: "luks table bounds",
} as const;
export type CheckName = (typeof CHECK)[keyof typeof CHECK];

/** A check that ran and passed. */
export function pass(name: CheckName, detail?: string): CheckResult {
  return detail === undefined ? { name, passed: true } : { name, passed: true, detail };
}

/** A check that ran and failed; `detail` is read by the image owner. */
export function fail(name: CheckName, detail: string): CheckResult {
  return { name, passed: false, detail };
}

/** `fail(name, problem)` when there is a problem, `pass(name)` otherwise. */
export function check(name: CheckName, problem: string | undefined): CheckResult {
  return problem === undefined ? pass(name) : fail(name, problem);
}

/** "<check>: <detail>", the message a user reads on a killed image. */
export function failureMessage(result: CheckResult): string {
  return `${result.name}: ${result.detail ?? "failed"}`;
}
