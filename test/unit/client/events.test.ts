import { appendFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { eventsPath, showEvents } from "../../../client/lib/events.ts";

const event = (type: string, image: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    version: "0",
    id: `${type}-${image}`,
    "detail-type": type,
    source: "hangar",
    time: "2026-12-07T06:00:00.000Z",
    detail: { image_id: image, project_id: "p", request_id: "req-1", ...extra },
  });

let home = "";
afterEach(async () => {
  if (home) await rm(home, { recursive: true, force: true });
});

describe("hangar events", () => {
  it("prints every event, or one image's, a line each with its type, image, request and detail", async () => {
    home = await mkdtemp(join(tmpdir(), "hangar-events-"));
    await writeFile(
      eventsPath(home),
      `${[event("image.created", "a"), event("image.created", "b"), event("image.killed", "a", { reason: "FORMAT_MISMATCH" })].join("\n")}\n`,
    );
    const all: string[] = [];
    expect(await showEvents({ home, out: (l) => all.push(l) })).toBe(3);
    const one: string[] = [];
    await showEvents({ home, imageId: "a", out: (l) => one.push(l) });
    expect(one).toHaveLength(2);
    expect(one[1]).toMatch(
      /^2026-12-07T06:00:00.000Z {2}image\.killed +a {2}req-1 {2}reason=FORMAT_MISMATCH$/,
    );
  });

  it("--follow prints events written later, a half-written line once it is whole, and stops when told", async () => {
    home = await mkdtemp(join(tmpdir(), "hangar-events-"));
    const lines: string[] = [];
    const stop = new AbortController();
    const done = showEvents({
      home,
      follow: true,
      signal: stop.signal,
      pollMs: 20,
      out: (l) => lines.push(l),
    });
    await new Promise((r) => setTimeout(r, 60));
    const next = event("image.activated", "c");
    await appendFile(eventsPath(home), next.slice(0, 20));
    await new Promise((r) => setTimeout(r, 60));
    expect(lines).toEqual([]);
    await appendFile(eventsPath(home), `${next.slice(20)}\n`);
    for (let i = 0; i < 50 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    stop.abort();
    expect(await done).toBe(1);
    expect(lines[0]).toContain("image.activated");
  });
});
