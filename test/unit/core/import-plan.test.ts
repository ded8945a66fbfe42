import { describe, expect, it } from "vitest";
import { NeedsRangedReads, NonMonotonicSource } from "../../../functions/core/convert/index.ts";
import { HangarError } from "../../../functions/core/errors.ts";
import type { DetectionResult } from "../../../functions/core/formats/index.ts";
import {
  declaredMatches,
  fallbackFor,
  type ImportPlan,
  type ImportPolicy,
  planImport,
} from "../../../functions/core/import/plan.ts";

const policy = (preferredFormat: string, acceptedFormats: string[]): ImportPolicy => ({
  preferredFormat,
  acceptedFormats,
  maxVirtualSize: 2 ** 40,
  maxGzipRatio: 64,
});
/** The default policy: raw stored, raw and iso accepted. */
const RAW = policy("raw", ["raw", "iso"]);
const QCOW2 = policy("qcow2", ["qcow2"]);
const KEEP = policy("raw", ["raw", "iso", "qcow2", "vmdk", "vhd", "vhdx", "vdi"]);
const VMDK = policy("vmdk", ["vmdk"]);

const plan = (format: string, gzip: boolean, declared: string | null, p: ImportPolicy) =>
  planImport({
    detected: { format, compression: gzip ? "gzip" : "none" } as DetectionResult,
    wrapped: gzip,
    declaredFormat: declared,
    policy: p,
  });

describe("planImport", () => {
  // detected format, gzip-wrapped, declared disk_format, policy → the plan
  const table: [string, boolean, string | null, ImportPolicy, Partial<ImportPlan>][] = [
    // Stored as it is.
    ["raw", false, null, RAW, { kind: "pass-through", format: "raw", converts: false }],
    ["iso", false, "raw", RAW, { kind: "pass-through", format: "iso" }],
    ["iso", false, "iso", RAW, { kind: "pass-through", format: "iso" }],
    ["raw", false, "ami", RAW, { kind: "pass-through", format: "raw" }],
    ["qcow2", false, "qcow2", KEEP, { kind: "pass-through", format: "qcow2" }],
    ["qcow2", false, null, QCOW2, { kind: "pass-through", format: "qcow2" }],
    // Converted while streaming, with ranged reads of the upload.
    ["qcow2", false, null, RAW, { kind: "convert", from: "qcow2", to: "raw", converts: true }],
    ["vmdk", false, "vmdk", RAW, { kind: "convert", from: "vmdk", to: "raw" }],
    ["vhd", false, null, RAW, { kind: "convert", from: "vhd", to: "raw" }],
    ["vhdx", false, null, RAW, { kind: "convert", from: "vhdx", to: "raw" }],
    ["vdi", false, null, RAW, { kind: "convert", from: "vdi", to: "raw" }],
    ["raw", false, null, QCOW2, { kind: "convert", from: "raw", to: "qcow2" }],
    ["iso", false, "iso", QCOW2, { kind: "convert", from: "raw", to: "qcow2" }],
    ["vmdk", false, null, QCOW2, { kind: "convert", from: "vmdk", to: "qcow2" }],
    // Unwrapped as it is read.
    ["raw", true, null, RAW, { kind: "unwrap", format: "raw", converts: false }],
    ["raw", true, "raw", RAW, { kind: "unwrap", format: "raw" }],
    ["qcow2", true, null, KEEP, { kind: "unwrap", format: "qcow2" }],
    ["vhd", true, "vhd", KEEP, { kind: "unwrap", format: "vhd" }],
    // Unwrapped and converted as it is read, forward only.
    ["qcow2", true, null, RAW, { kind: "unwrap-convert", from: "qcow2", to: "raw", converts: true }],
    ["vmdk", true, "vmdk", RAW, { kind: "unwrap-convert", from: "vmdk", to: "raw" }],
    ["vhdx", true, null, RAW, { kind: "unwrap-convert", from: "vhdx", to: "raw" }],
    ["vdi", true, null, RAW, { kind: "unwrap-convert", from: "vdi", to: "raw" }],
    // Spooled first: qcow2 output reads its source twice; a raw start may end as a fixed vhd.
    ["qcow2", true, null, policy("qcow2", ["raw"]), { kind: "spool-first", converts: true }],
    ["raw", true, null, QCOW2, { kind: "spool-first", converts: true }],
    ["raw", true, null, policy("raw", ["qcow2"]), { kind: "spool-first", converts: true }],
    ["raw", true, "vhd", RAW, { kind: "spool-first", converts: false }],
    ["raw", true, "qcow2", KEEP, { kind: "spool-first", converts: false }],
    ["raw", true, "vhd", VMDK, { kind: "spool-first", converts: true }],
    ["raw", true, null, VMDK, { kind: "spool-first", converts: true }],
    // Refused by the ends alone.
    ["qcow2", false, "raw", RAW, { kind: "refuse", reason: "FORMAT_MISMATCH", inspectFirst: false }],
    ["raw", false, "vhd", RAW, { kind: "refuse", reason: "FORMAT_MISMATCH", inspectFirst: false }],
    ["qcow2", true, "vmdk", KEEP, { kind: "refuse", reason: "FORMAT_MISMATCH", inspectFirst: false }],
    ["iso", false, "qcow2", RAW, { kind: "refuse", reason: "FORMAT_MISMATCH" }],
    ["luks", false, "raw", RAW, { kind: "refuse", reason: "FORMAT_MISMATCH" }],
    // Refused once the inspector has read everything (its refusal is the better reason).
    ["luks", false, null, RAW, { kind: "refuse", reason: "UNSUPPORTED_FORMAT", inspectFirst: true }],
    ["luks", true, null, RAW, { kind: "refuse", reason: "UNSUPPORTED_FORMAT", inspectFirst: true }],
    ["qcow2", false, null, VMDK, { kind: "refuse", reason: "UNSUPPORTED_FORMAT", inspectFirst: true }],
    ["qcow2", true, null, VMDK, { kind: "refuse", reason: "UNSUPPORTED_FORMAT", inspectFirst: true }],
  ];

  it.each(table)("%s (gzip: %s, declared %s) under %o", (format, gzip, declared, p, expected) => {
    expect(plan(format, gzip, declared, p)).toMatchObject(expected);
  });

  it("says the upload is gzip-compressed in a mismatch message", () => {
    expect(plan("qcow2", true, "vmdk", KEEP)).toMatchObject({
      message: "The image declares disk_format vmdk but the upload is qcow2 (gzip-compressed).",
    });
    expect(plan("qcow2", false, "vmdk", KEEP)).toMatchObject({
      message: "The image declares disk_format vmdk but the upload is qcow2.",
    });
  });

  it("plans a spool, which is unwrapped with both ends seen, without spooling or unwrapping again", () => {
    const formats = ["raw", "iso", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "luks"];
    const declared = [null, "raw", "ami", "iso", "qcow2", "vmdk", "vhd", "vhdx", "vdi"];
    for (const p of [RAW, QCOW2, KEEP, VMDK])
      for (const format of formats)
        for (const d of declared) {
          const spool = planImport({
            detected: { format, compression: "gzip" } as DetectionResult,
            wrapped: false,
            declaredFormat: d,
            policy: p,
          });
          expect(["pass-through", "convert", "refuse"]).toContain(spool.kind);
          expect(fallbackFor(spool)).toBeUndefined();
        }
  });

  it("stores bytes as they are only when the format is accepted and not wrapped", () => {
    for (const p of [RAW, QCOW2, KEEP, VMDK])
      for (const format of ["raw", "iso", "qcow2", "vmdk", "vhd", "vhdx", "vdi"])
        for (const gzip of [false, true]) {
          const kind = plan(format, gzip, null, p).kind;
          expect(kind === "pass-through").toBe(!gzip && p.acceptedFormats.includes(format));
        }
  });
});

describe("fallbackFor", () => {
  it("sends the forward-only plans through the spool, keeping whether they convert", () => {
    expect(fallbackFor(plan("raw", true, null, RAW))).toEqual({ kind: "spool-first", converts: false });
    expect(fallbackFor(plan("qcow2", true, null, RAW))).toEqual({ kind: "spool-first", converts: true });
  });

  it("has none for plans that already read with ranged reads, or read nothing", () => {
    for (const p of [
      plan("raw", false, null, RAW),
      plan("qcow2", false, null, RAW),
      plan("raw", true, null, QCOW2),
      plan("luks", false, null, RAW),
    ]) {
      expect(fallbackFor(p)).toBeUndefined();
    }
  });
});

describe("the need for ranged reads", () => {
  it("is a signal for the importer, not a domain error with a reason that could kill an image", () => {
    for (const signal of [new NeedsRangedReads("a footer at the end"), new NonMonotonicSource(10, 20)]) {
      expect(signal).toBeInstanceOf(NeedsRangedReads);
      expect(signal).not.toBeInstanceOf(HangarError);
      expect(signal).not.toHaveProperty("reason");
    }
  });
});

describe("declaredMatches", () => {
  it("takes raw's other names for raw and iso, and nothing else for another format", () => {
    for (const alias of ["raw", "ami", "ari", "aki"]) {
      expect(declaredMatches(alias, "raw")).toBe(true);
      expect(declaredMatches(alias, "iso")).toBe(true);
      expect(declaredMatches(alias, "qcow2")).toBe(false);
    }
    expect(declaredMatches("iso", "iso")).toBe(true);
    expect(declaredMatches("iso", "raw")).toBe(false);
    expect(declaredMatches("vhd", "vpc")).toBe(false);
  });
});
