import { randomUUID } from "node:crypto";
import { appendFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

/** The account id the local stack's events carry (there is no account). */
const LOCAL_ACCOUNT = "000000000000";

/** One event as EventBridge delivers it to a rule's target, and as `events.jsonl` holds it, one per line. */
export interface DeliveredEvent {
  version: "0";
  id: string;
  "detail-type": string;
  source: string;
  account: string;
  time: string;
  region: string;
  resources: string[];
  detail: Record<string, unknown>;
}

interface PutEventsEntry {
  Source?: unknown;
  DetailType?: unknown;
  Detail?: unknown;
  Time?: unknown;
  EventBusName?: unknown;
}

/**
 * EventBridge's PutEvents, as the local stack answers it: every entry is appended to one JSON-lines file
 * (`<HANGAR_HOME>/events.jsonl`) in the shape a rule's target receives, which `hangar events` reads. The
 * answer is PutEvents's own (`FailedEntryCount`, an `EventId` per entry); an entry without a source,
 * detail type or JSON object detail fails as EventBridge fails it.
 */
export async function putEvents(
  file: string,
  region: string,
  body: unknown,
): Promise<{ FailedEntryCount: number; Entries: Record<string, string>[] }> {
  const entries = (body as { Entries?: unknown })?.Entries;
  if (!Array.isArray(entries) || entries.length === 0 || entries.length > 10) {
    throw new PutEventsError("Entries must hold 1 to 10 entries");
  }
  const lines: string[] = [];
  const answers = entries.map((entry: PutEventsEntry): Record<string, string> => {
    const detail = parseDetail(entry.Detail);
    if (typeof entry.Source !== "string" || typeof entry.DetailType !== "string" || !detail) {
      return {
        ErrorCode: "MalformedDetail",
        ErrorMessage: "Source, DetailType and a JSON object Detail are required",
      };
    }
    const event: DeliveredEvent = {
      version: "0",
      id: randomUUID(),
      "detail-type": entry.DetailType,
      source: entry.Source,
      account: LOCAL_ACCOUNT,
      time: typeof entry.Time === "string" ? entry.Time : new Date().toISOString(),
      region,
      resources: [],
      detail,
    };
    lines.push(JSON.stringify(event));
    return { EventId: event.id };
  });
  if (lines.length > 0) append(file, `${lines.join("\n")}\n`);
  return { FailedEntryCount: entries.length - lines.length, Entries: answers };
}

/**
 * Appends in one synchronous call (the folder made only when missing): a few hundred bytes, where a
 * mkdir and an appendFile through the thread pool took several round trips of it per event. Entries of
 * concurrent calls never interleave.
 */
function append(file: string, text: string): void {
  try {
    appendFileSync(file, text);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    mkdirSync(dirname(file), { recursive: true });
    appendFileSync(file, text);
  }
}

export class PutEventsError extends Error {
  override name = "ValidationException";
}

function parseDetail(detail: unknown): Record<string, unknown> | undefined {
  if (typeof detail !== "string") return undefined;
  try {
    const parsed = JSON.parse(detail) as unknown;
    return parsed && typeof parsed === "object" && !Array.isArray(parsed)
      ? (parsed as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}
