import { describe, expect, it } from "vitest";
import { type LifecycleEvent, publishingImages, publishingMembers } from "../../functions/core/lifecycle.ts";
import { imageRecord, MemoryImages, MemoryMembers } from "./fakes.ts";

function sink(fail = false) {
  const published: LifecycleEvent[] = [];
  return {
    published,
    publish: async (events: readonly LifecycleEvent[]) => {
      if (fail) throw new Error("bus unreachable");
      published.push(...events);
    },
  };
}

const warnings: string[] = [];
const log = { info() {}, warn: (m: string) => void warnings.push(m), error() {} };

describe("lifecycle events from the repositories", () => {
  it("create, upload, import and activation, in order, with the create's request id stamped on the record", async () => {
    const events = sink();
    const records = new MemoryImages();
    const images = publishingImages(records, events, log, { requestId: () => "req-1" });
    const image = imageRecord({ status: "queued" });
    await images.create(image);
    expect((await records.get(image.id))?.request_id).toBe("req-1");
    await images.transition(image.id, "startImport", {
      import_progress: { bytes_read: 0, total: 10, updated_at: image.updated_at },
    });
    await images.transition(image.id, "finishImport", { size: 10, checksum: "abc" });
    expect(events.published.map((e) => e.type)).toEqual([
      "image.created",
      "image.upload.completed",
      "image.import.started",
      "image.activated",
    ]);
    expect(events.published.at(-1)?.detail).toMatchObject({ image_id: image.id, size: 10, checksum: "abc" });
  });

  it("a takeover or a web-download fetch starts an import without a second upload.completed", async () => {
    const events = sink();
    const images = publishingImages(new MemoryImages(), events, log);
    const image = imageRecord({ status: "queued" });
    await images.create(image);
    // A web-download fetch takes the image without a progress record.
    await images.transition(image.id, "startImport", {});
    expect(events.published.map((e) => e.type)).toEqual(["image.created", "image.import.started"]);
    expect(events.published.at(-1)?.detail).toMatchObject({ method: "web-download" });
  });

  it("a kill carries its reason; a release publishes nothing", async () => {
    const events = sink();
    const images = publishingImages(new MemoryImages(), events, log);
    const image = imageRecord({ status: "importing" });
    await images.create(image);
    await images.transition(image.id, "releaseImport", {});
    await images.transition(image.id, "failImport", {
      failure: { reason: "FORMAT_MISMATCH", message: "declared qcow2, uploaded raw" },
    });
    expect(events.published.map((e) => e.type)).toEqual(["image.created", "image.killed"]);
    expect(events.published.at(-1)?.detail).toMatchObject({ reason: "FORMAT_MISMATCH" });
  });

  it("a failed publish never fails the change: it is logged and counted", async () => {
    const counted: number[] = [];
    const records = new MemoryImages();
    const images = publishingImages(records, sink(true), log, { failed: (e) => void counted.push(e.length) });
    const image = imageRecord({ status: "queued" });
    await images.create(image);
    expect(await records.get(image.id)).toBeDefined();
    expect(counted).toEqual([1]);
    expect(warnings).toContain("lifecycle events not published");
  });

  it("a failed change publishes nothing", async () => {
    const events = sink();
    const images = publishingImages(new MemoryImages(), events, log);
    await expect(images.transition("no-such-image", "finishImport", {})).rejects.toThrow();
    expect(events.published).toEqual([]);
  });

  it("members: created, updated and deleted, with the image's owner as the project", async () => {
    const events = sink();
    const members = publishingMembers(new MemoryMembers(), async () => "owner-project", events, log);
    const at = "2026-01-01T00:00:00.000Z";
    await members.add({ image_id: "i", member_id: "m", status: "pending", created_at: at, updated_at: at });
    await members.setStatus("i", "m", "accepted", at);
    await members.remove("i", "m");
    expect(events.published.map((e) => [e.type, e.detail.project_id, e.detail.status])).toEqual([
      ["image.member.created", "owner-project", "pending"],
      ["image.member.updated", "owner-project", "accepted"],
      ["image.member.deleted", "owner-project", undefined],
    ]);
  });
});
