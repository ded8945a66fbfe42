import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { type ImageRecord, stagingKey } from "../../../functions/core/image/image.ts";
import { redriveStaleImports } from "../../../functions/core/import/redrive.ts";
import { fixedClock, imageRecord, MemoryImages, silentLog } from "../fakes.ts";

describe("redriveStaleImports", () => {
  it("hands back uploads whose importer died or whose event was lost, and nothing else", async () => {
    const clock = fixedClock();
    const images = new MemoryImages();
    const now = clock.now().getTime();
    const iso = (ms: number) => new Date(now + ms).toISOString();
    const make = async (fields: Partial<ImageRecord>) => {
      const image = imageRecord({ id: randomUUID(), ...fields });
      await images.create(image);
      return image.id;
    };
    const dead = await make({ status: "importing", import_lease_until: iso(-1) });
    const live = await make({ status: "importing", import_lease_until: iso(30_000) });
    const lost = await make({ status: "queued" });
    const fresh = await make({ status: "queued" });
    const done = await make({ status: "active" });
    const staged = [
      { key: stagingKey(dead), lastModified: iso(-120_000) },
      { key: stagingKey(live), lastModified: iso(-120_000) },
      { key: stagingKey(lost), lastModified: iso(-61_000) },
      { key: stagingKey(fresh), lastModified: iso(-5_000) },
      { key: stagingKey(done), lastModified: iso(-120_000) },
      { key: stagingKey(randomUUID()), lastModified: iso(-120_000) },
      { key: "staging/not-an-image", lastModified: iso(-120_000) },
    ].map((o) => ({ ...o, size: 1 }));
    const triggered: string[] = [];
    const report = await redriveStaleImports({
      images,
      listObjects: async (prefix) => staged.filter((o) => o.key.startsWith(prefix)),
      trigger: { importStaged: async (key) => void triggered.push(key) },
      clock,
      log: silentLog,
      queuedAfterSeconds: 60,
    });
    expect(report.redriven.sort()).toEqual([dead, lost].sort());
    expect(triggered.sort()).toEqual([stagingKey(dead), stagingKey(lost)].sort());
  });
});
