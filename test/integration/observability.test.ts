import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { api, getStack, stackLog, uploadThroughLink, waitForStatus } from "./setup/stack.ts";

// One image followed from request to `active` (or `killed`) through what an operator has: the stack's
// log (the functions' JSON lines, as CloudWatch Logs would hold them), the EMF metric lines in it, and
// the lifecycle events the functions published (events.jsonl, the local EventBridge).

interface Delivered {
  source: string;
  "detail-type": string;
  detail: Record<string, unknown> & { image_id: string; request_id: string | null };
}

async function eventsOf(imageId: string): Promise<Delivered[]> {
  const text = await readFile(join(inject("hangarStack").home, "events.jsonl"), "utf8").catch(() => "");
  return text
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Delivered)
    .filter((e) => e.detail.image_id === imageId);
}

async function waitForEvent(imageId: string, type: string, timeoutMs = 15_000): Promise<Delivered[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const events = await eventsOf(imageId);
    if (events.some((e) => e["detail-type"] === type)) return events;
    if (Date.now() > deadline) {
      throw new Error(`no ${type} for ${imageId}; saw ${events.map((e) => e["detail-type"]).join(", ")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The JSON log lines of the functions (`[api] {...}`), parsed. */
async function functionLines(): Promise<Record<string, unknown>[]> {
  return (await stackLog()).flatMap((line) => {
    const json = line.slice(line.indexOf("{"));
    if (!json.startsWith("{")) return [];
    try {
      return [JSON.parse(json) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

async function createAndUpload(bytes: Uint8Array, diskFormat: string) {
  const token = getStack().tokens.alice;
  const created = await api(
    "/v2/images",
    {
      method: "POST",
      body: JSON.stringify({
        name: "observed",
        disk_format: diskFormat,
        container_format: "bare",
        upload_size: bytes.length,
      }),
    },
    token,
  );
  const requestId = created.headers.get("x-openstack-request-id") ?? "";
  expect(requestId).toMatch(/^req-[0-9a-f-]{36}$/);
  const { id } = await uploadThroughLink(created, bytes);
  return { id, requestId, token };
}

describe("following one image from its create call", () => {
  it("an import to active: one request id on the API and import lines, EMF metrics, the lifecycle events in order", async () => {
    const bytes = new Uint8Array(1024 * 1024).fill(7);
    const { id, requestId, token } = await createAndUpload(bytes, "raw");
    await waitForStatus(id, "active", token);
    const events = await waitForEvent(id, "image.activated");

    // Events: EventBridge-shaped, from Hangar, in lifecycle order, each with the create's request id.
    expect(events.map((e) => e["detail-type"])).toEqual([
      "image.created",
      "image.upload.completed",
      "image.import.started",
      "image.activated",
    ]);
    for (const e of events) {
      expect(e.source).toBe("hangar");
      expect(e.detail).toMatchObject({ image_id: id, project_id: expect.any(String), request_id: requestId });
    }
    expect(events.at(-1)?.detail).toMatchObject({ size: bytes.length, disk_format: "raw" });

    // The importer writes its last lines just after the record turns active.
    let lines = await functionLines();
    for (let i = 0; i < 100 && !lines.some((l) => l.image_id === id && l.message === "import result"); i++) {
      await new Promise((r) => setTimeout(r, 100));
      lines = await functionLines();
    }
    // The API's line for the create, with its route, status and project.
    const request = lines.find((l) => l.message === "request" && l.request_id === requestId);
    expect(request).toMatchObject({ method: "POST", route: "/v2/images", status: 201 });
    expect(request?.project).toEqual(expect.any(String));
    // The importer's lines for this image carry the create's request id and the image id.
    const importLines = lines.filter((l) => l.image_id === id && l.function_name === "hangar-local-importer");
    expect(importLines.map((l) => l.message)).toEqual(
      expect.arrayContaining(["import started", "import finished", "import result"]),
    );
    for (const l of importLines) expect(l.request_id, String(l.message)).toBe(requestId);
    expect(importLines.find((l) => l.message === "import result")).toMatchObject({
      outcome: "active",
      bytesRead: bytes.length,
      cold_start: expect.any(Boolean),
      function_request_id: expect.any(String),
    });

    // The one human line `npm start` prints for it.
    expect(
      (await stackLog()).some((l) =>
        new RegExp(`import ${id}: raw → raw, 1\\.0 MiB read, .* active$`).test(l),
      ),
    ).toBe(true);

    // EMF: the import's metrics, in the Hangar namespace, with their dimensions declared.
    const emf = lines.filter((l) => l._aws !== undefined);
    const named = (name: string) =>
      emf.filter((l) =>
        (
          l._aws as { CloudWatchMetrics: { Namespace: string; Metrics: { Name: string }[] }[] }
        ).CloudWatchMetrics.some((m) => m.Namespace === "Hangar" && m.Metrics.some((x) => x.Name === name)),
      );
    expect(named("Imports").some((l) => l.outcome === "active")).toBe(true);
    expect(named("ImportBytesRead").some((l) => l.ImportBytesRead === bytes.length)).toBe(true);
    expect(named("ImportDuration").length).toBeGreaterThan(0);
    expect(named("ApiLatency").some((l) => l.route === "POST /v2/images" && l.status_class === "2xx")).toBe(
      true,
    );
  });

  it("a refused import: image.killed with the reason the user reads", async () => {
    // Declared qcow2, uploaded raw bytes: the importer refuses the mismatch.
    const { id, requestId, token } = await createAndUpload(new Uint8Array(64 * 1024).fill(1), "qcow2");
    const image = await waitForStatus(id, "killed", token);
    const events = await waitForEvent(id, "image.killed");
    const killed = events.find((e) => e["detail-type"] === "image.killed");
    expect(killed?.detail).toMatchObject({
      request_id: requestId,
      reason: (image.failure as { reason: string }).reason,
    });
    expect(events.map((e) => e["detail-type"])).not.toContain("image.activated");
  });

  it("delete and deactivate are published too, with the request id of the call that made them", async () => {
    const { id, token } = await createAndUpload(new Uint8Array(64 * 1024).fill(3), "raw");
    await waitForStatus(id, "active", token);
    const deactivate = await api(`/v2/images/${id}/actions/deactivate`, { method: "POST" }, token);
    expect(deactivate.status).toBe(204);
    const removed = await api(`/v2/images/${id}`, { method: "DELETE" }, token);
    expect(removed.status).toBe(204);
    const events = await waitForEvent(id, "image.deleted");
    const find = (type: string) => events.find((e) => e["detail-type"] === type);
    expect(find("image.deactivated")?.detail.request_id).toBe(
      deactivate.headers.get("x-openstack-request-id"),
    );
    expect(find("image.deleted")?.detail.request_id).toBe(removed.headers.get("x-openstack-request-id"));
  });
});
