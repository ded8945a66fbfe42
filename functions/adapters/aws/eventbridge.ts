import type { LifecycleEvent, LifecycleEventSink } from "../../core/lifecycle.ts";
import { currentContext } from "../observability/context.ts";
import { SignedJsonClient } from "./signed-request.ts";

/** EventBridge's `source` of every Hangar event; rules match on it and on `detail-type`. */
export const EVENT_SOURCE = "hangar";

/** PutEvents takes at most 10 entries per call. */
const MAX_ENTRIES = 10;
/** A state change waits this long at most for its events to be accepted. */
const PUT_TIMEOUT_MS = 3_000;

/**
 * The detail as published: the event's, with the request id of the work that caused it: the request being
 * served, else the one that created the image, else null.
 */
export function eventDetail(event: LifecycleEvent): Record<string, unknown> {
  const { request_id } = currentContext();
  return { ...event.detail, request_id: request_id ?? event.detail.request_id ?? null };
}

/**
 * Publishes lifecycle events to an EventBridge bus with PutEvents (one signed JSON request; the local
 * stack answers the same operation by appending the entries to `<HANGAR_HOME>/events.jsonl`). A call that
 * fails, or that EventBridge answers with failed entries, rejects.
 */
export class EventBridgeSink implements LifecycleEventSink {
  private readonly client: SignedJsonClient;

  constructor(
    private readonly bus: string,
    region: string,
    endpoint?: string,
  ) {
    this.client = new SignedJsonClient({
      service: "events",
      region,
      endpoint,
      timeoutMs: PUT_TIMEOUT_MS,
      describe: `EventBridge PutEvents to ${bus}`,
    });
  }

  async publish(events: readonly LifecycleEvent[]): Promise<void> {
    const time = new Date().toISOString();
    for (let i = 0; i < events.length; i += MAX_ENTRIES) {
      const entries = events.slice(i, i + MAX_ENTRIES).map((event) => ({
        EventBusName: this.bus,
        Source: EVENT_SOURCE,
        DetailType: event.type,
        Detail: JSON.stringify(eventDetail(event)),
        Time: time,
      }));
      const { text } = await this.client.post(
        "/",
        { "content-type": "application/x-amz-json-1.1", "x-amz-target": "AWSEvents.PutEvents" },
        JSON.stringify({ Entries: entries }),
        [200],
      );
      const failed = (JSON.parse(text) as { FailedEntryCount?: number }).FailedEntryCount ?? 0;
      if (failed > 0) throw new Error(`EventBridge refused ${failed} of ${entries.length} events: ${text}`);
    }
  }
}
