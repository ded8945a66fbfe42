import { open, stat } from "node:fs/promises";
import { join } from "node:path";

/** One lifecycle event as the local stack keeps it (the shape EventBridge delivers to a rule's target). */
export interface StoredEvent {
  id: string;
  time: string;
  source: string;
  "detail-type": string;
  detail: { image_id?: string; project_id?: string; request_id?: string | null } & Record<string, unknown>;
}

/** The local stack's event log: `<home>/events.jsonl`. */
export const eventsPath = (home: string) => join(home, "events.jsonl");

/** `time  type  image  request  the rest of the detail`, one line per event. */
export function formatEvent(e: StoredEvent): string {
  const { image_id, project_id, request_id, ...rest } = e.detail;
  const more = Object.entries(rest)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  return [e.time, e["detail-type"].padEnd(24), image_id ?? "-", request_id ?? "-", more].join("  ").trimEnd();
}

function parse(line: string): StoredEvent | undefined {
  try {
    const e = JSON.parse(line) as StoredEvent;
    return typeof e["detail-type"] === "string" && e.detail && typeof e.detail === "object" ? e : undefined;
  } catch {
    return undefined;
  }
}

/** Whole lines of `file` from byte `start`, parsed and filtered; resolves with the offset after the last one. */
async function readFrom(
  file: string,
  start: number,
  keep: (e: StoredEvent) => boolean,
  out: (e: StoredEvent) => void,
): Promise<number> {
  let size: number;
  try {
    size = (await stat(file)).size;
  } catch {
    return start;
  }
  // A file that shrank was started over (a new stack home).
  const from = size < start ? 0 : start;
  if (size === from) return from;
  const handle = await open(file, "r");
  try {
    const buffer = Buffer.alloc(size - from);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, from);
    // A line still being written (no newline yet) is read again next time.
    const whole = buffer.subarray(0, bytesRead).lastIndexOf(0x0a) + 1;
    for (const line of buffer.subarray(0, whole).toString("utf8").split("\n")) {
      const e = line ? parse(line) : undefined;
      if (e && keep(e)) out(e);
    }
    return from + whole;
  } finally {
    await handle.close();
  }
}

/**
 * Prints the local stack's lifecycle events (optionally of one image), then, with `follow`, the new ones
 * as they are written until `signal` aborts.
 */
export async function showEvents(options: {
  home: string;
  imageId?: string;
  follow?: boolean;
  signal?: AbortSignal;
  out: (line: string) => void;
  /** Each event as the JSON line it is stored as, instead of the readable line. */
  json?: boolean;
  pollMs?: number;
}): Promise<number> {
  const file = eventsPath(options.home);
  const keep = (e: StoredEvent) => options.imageId === undefined || e.detail.image_id === options.imageId;
  let shown = 0;
  const out = (e: StoredEvent) => {
    shown++;
    options.out(options.json ? JSON.stringify(e) : formatEvent(e));
  };
  let offset = await readFrom(file, 0, keep, out);
  while (options.follow && !options.signal?.aborted) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, options.pollMs ?? 250);
      options.signal?.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      });
    });
    offset = await readFrom(file, offset, keep, out);
  }
  return shown;
}
