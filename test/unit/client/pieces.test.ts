import { mkdtempSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { describe, expect, it, vi } from "vitest";
import { uploadSummary } from "../../../client/cli.ts";
import type { HangarClient } from "../../../client/lib/api.ts";
import {
  declaredMatches,
  diskFormatFor,
  ImageRefusedError,
  type LocalInspection,
  policyLine,
} from "../../../client/lib/inspect.ts";
import { progressReporter } from "../../../client/lib/progress.ts";
import { SparseWriter } from "../../../client/lib/sparse.ts";
import { whyRefused } from "../../../client/lib/token.ts";
import { humanDuration } from "../../../client/lib/units.ts";
import type { UploadResult } from "../../../client/lib/upload.ts";
import { waitForImage } from "../../../client/lib/wait.ts";

const jwt = (claims: object) =>
  ["e30", Buffer.from(JSON.stringify(claims)).toString("base64url"), "sig"].join(".");

describe("why a token was refused", () => {
  const now = Date.parse("2026-12-07T06:00:00Z");
  it("tells a malformed, an expired and a foreign token apart", () => {
    expect(whyRefused("not-a-token", now)).toMatch(/^the token is not a JWT/);
    expect(whyRefused("a.%%%.c", now)).toMatch(/^the token is not a readable JWT/);
    expect(whyRefused(jwt({ exp: now / 1000 - 600 }), now)).toMatch(
      /^the token expired at 2026-12-07T05:50:00.000Z \(10 min ago\)/,
    );
    expect(whyRefused(jwt({ exp: now / 1000 + 600, iss: "elsewhere" }), now)).toMatch(
      /has not expired.*\(issuer elsewhere\)/,
    );
  });
});

describe("units", () => {
  it("gives a timeout back in the unit the user typed", () => {
    expect(humanDuration(2000)).toBe("2 s");
    expect(humanDuration(1500)).toBe("1500 ms");
  });
});

describe("upload progress", () => {
  it("counts the parts this run sends, out of the plan's", () => {
    const stream = new PassThrough();
    let text = "";
    stream.on("data", (d: Buffer) => (text += d.toString()));
    const p = progressReporter(stream as unknown as NodeJS.WriteStream);
    p.begin?.({
      imageId: "i",
      resumed: true,
      method: "multipart",
      bytes: 13e6,
      partCount: 19,
      partsToSend: 1,
    });
    p.begin?.({
      imageId: "i",
      resumed: false,
      method: "multipart",
      bytes: 13e6,
      partCount: 3,
      partsToSend: 3,
    });
    expect(text).toContain("resuming image i: 12.4 MiB to send in 1 part (of 19)\n");
    expect(text).toContain("uploading image i: 12.4 MiB to send in 3 parts\n");
  });
});

describe("what upload prints", () => {
  const base: UploadResult = {
    image_id: "i",
    status: "queued",
    resumed: false,
    method: "PUT",
    part_size: null,
    part_count: null,
    uploaded_parts: [],
    skipped_parts: [],
    bytes_uploaded: 10,
    sha256: "a".repeat(64),
    sha256_declared: true,
    file_format: "qcow2",
    disk_format: null,
    converted: null,
    size: null,
    virtual_size: null,
    checksum: null,
    os_hash_algo: null,
    os_hash_value: null,
    failure: null,
  };
  it("does not call a sha256 verified before the import", () => {
    const lines = uploadSummary(base).join("\n");
    expect(lines).toContain("image i queued: its bytes are in storage, the import has not finished");
    expect(lines).toContain("declared; Hangar verifies it on import");
    expect(lines).not.toContain("verified by");
  });
  it("says which checksum is of the file and which of the stored image", () => {
    const done = { ...base, status: "active", disk_format: "raw", converted: true, size: 2 ** 31 };
    const lines = uploadSummary({
      ...done,
      checksum: "b".repeat(32),
      os_hash_algo: "sha512",
      os_hash_value: "c",
    });
    expect(lines[0]).toBe("image i active: converted from qcow2 and stored as raw, 2.0 GiB");
    expect(lines[1]).toMatch(/^file sha256 +a{64} +\(of the file sent; verified by Hangar on import\)$/);
    expect(lines[2]).toMatch(/^image md5 +b{32} +\(of the stored image, not of the file; /);
  });
});

describe("local inspection verdicts", () => {
  const found: LocalInspection = { format: "qcow2", compression: "none", virtualSize: 2 ** 31, checks: [] };
  it("fills the disk format, accepts raw aliases for an ISO, refuses a mismatch", () => {
    expect(diskFormatFor(undefined, { ...found })).toBe("qcow2");
    expect(declaredMatches("ami", "iso")).toBe(true);
    expect(() => diskFormatFor("vmdk", { ...found })).toThrow(ImageRefusedError);
  });
  it("says what the policy makes of the file", () => {
    const policy = {
      preferred_format: "raw",
      accepted_formats: ["raw", "iso"],
      max_virtual_size: 1,
      max_gzip_ratio: 1,
    };
    expect(policyLine({ ...found }, policy)).toMatch(
      /^qcow2 \(2\.0 GiB virtual\) → converted and stored as raw, 2\.0 GiB/,
    );
    expect(policyLine({ ...found, format: "raw" }, policy)).toMatch(
      /^raw \(2\.0 GiB virtual\) → stored as it is/,
    );
  });
});

describe("sparse writes", () => {
  it("leaves holes for zero blocks across chunk boundaries, keeps the bytes and the length", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "hangar-sparse-")), "disk.raw");
    const data = Buffer.alloc(8 * 1024 * 1024);
    data.fill(7, 100, 5000);
    data.fill(9, 3 * 1024 * 1024, 3 * 1024 * 1024 + 10);
    const w = await SparseWriter.create(path);
    for (let at = 0; at < data.length; at += 1_000_003) await w.write(data.subarray(at, at + 1_000_003));
    await w.finish();
    expect((await readFile(path)).equals(data)).toBe(true);
    const info = await stat(path);
    expect(info.size).toBe(data.length);
    expect(info.blocks * 512).toBeLessThan(256 * 1024);
  });
});

describe("waiting for an import", () => {
  it("sees the image settle within a second of it, however long the import ran", async () => {
    vi.useFakeTimers();
    try {
      for (const readyAfterMs of [700, 6_000, 45_000]) {
        const started = Date.now();
        let seenAt: number | undefined;
        const client = {
          getImage: async (id: string) => {
            const ready = Date.now() - started >= readyAfterMs;
            if (ready) seenAt ??= Date.now();
            return { id, status: ready ? "active" : "importing" };
          },
        } as unknown as HangarClient;
        const waiting = waitForImage(client, "img");
        await vi.advanceTimersByTimeAsync(readyAfterMs + 5_000);
        await expect(waiting).resolves.toMatchObject({ status: "active" });
        expect((seenAt ?? Number.POSITIVE_INFINITY) - started - readyAfterMs).toBeLessThanOrEqual(1000);
      }
    } finally {
      vi.useRealTimers();
    }
  });
});
