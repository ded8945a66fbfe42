import type { ImageRecord } from "./image/image.ts";
import type { ImageMember } from "./image/members.ts";
import type { TransitionName } from "./image/transitions.ts";
import type { ImageRepository, Logger, MemberRepository } from "./ports.ts";

/**
 * Lifecycle events: what happened to an image, for billing, audit and automation to subscribe to (in AWS,
 * EventBridge; locally, `<HANGAR_HOME>/events.jsonl`). Published after the record changed, by decorating
 * the repositories, so every path that changes a record (API, importer, sweeper, web-download) publishes
 * the same events without knowing of them.
 */
export const LIFECYCLE_EVENT_TYPES = [
  "image.created",
  "image.upload.completed",
  "image.import.started",
  "image.activated",
  "image.killed",
  "image.deleted",
  "image.deactivated",
  "image.reactivated",
  "image.member.created",
  "image.member.updated",
  "image.member.deleted",
] as const;
export type LifecycleEventType = (typeof LIFECYCLE_EVENT_TYPES)[number];

/** One event: its type and its detail (`image_id` and `project_id` always, the rest by type). */
export interface LifecycleEvent {
  type: LifecycleEventType;
  detail: { image_id: string; project_id: string } & Record<string, unknown>;
}

/** Where events go. A failure rejects; the decorators log it and go on. */
export interface LifecycleEventSink {
  publish(events: readonly LifecycleEvent[]): Promise<void>;
}

/** No subscriber: events are dropped (a deployment without an event bus). */
export const NO_EVENTS: LifecycleEventSink = { publish: async () => {} };

/** Counts publishing failures (a metric); optional. */
export type PublishFailureCounter = (events: readonly LifecycleEvent[], error: unknown) => void;

/**
 * What every event of an image carries: the image, its project, and the request that created it. The
 * publisher puts the request now being served in its place when there is one (a delete names the delete
 * call); work no request starts (the import, the sweep) keeps the creating one.
 */
const image = (r: ImageRecord) => ({
  image_id: r.id,
  project_id: r.owner,
  ...(r.request_id ? { request_id: r.request_id } : {}),
});

/** The events one successful transition means, from the record it wrote. */
export function transitionEvents(
  name: TransitionName,
  record: ImageRecord,
  how: { takeover: boolean; webDownload: boolean },
): LifecycleEvent[] {
  switch (name) {
    case "startImport": {
      const started: LifecycleEvent = {
        type: "image.import.started",
        detail: {
          ...image(record),
          method: how.webDownload ? "web-download" : "upload",
          bytes: record.import_progress?.total ?? null,
          takeover: how.takeover,
        },
      };
      // The upload is complete when its object arrived (the importer takes the image); an import taken
      // over from a dead importer is the same upload, and a web-download fetch has not staged one yet.
      return how.takeover || how.webDownload
        ? [started]
        : [
            {
              type: "image.upload.completed",
              detail: { ...image(record), bytes: record.import_progress?.total ?? null },
            },
            started,
          ];
    }
    case "finishImport":
      return [
        {
          type: "image.activated",
          detail: {
            ...image(record),
            disk_format: record.disk_format,
            source_format: record.source_format,
            converted: record.converted,
            size: record.size,
            virtual_size: record.virtual_size,
            checksum: record.checksum,
            os_hash_algo: record.os_hash_algo,
            os_hash_value: record.os_hash_value,
          },
        },
      ];
    case "failImport":
      return [
        {
          type: "image.killed",
          detail: {
            ...image(record),
            reason: record.failure?.reason ?? null,
            message: record.failure?.message ?? null,
          },
        },
      ];
    case "deactivate":
      return [{ type: "image.deactivated", detail: image(record) }];
    case "reactivate":
      return [{ type: "image.reactivated", detail: image(record) }];
    case "delete":
      return [{ type: "image.deleted", detail: image(record) }];
    case "releaseImport":
    case "handOverImport":
      // Internal: the image is handed back to be imported again; nothing a subscriber acts on.
      return [];
  }
}

function publisher(sink: LifecycleEventSink, log: Logger, failed?: PublishFailureCounter) {
  return async (events: readonly LifecycleEvent[]): Promise<void> => {
    if (events.length === 0) return;
    try {
      await sink.publish(events);
    } catch (error) {
      // The change is made; an event that could not be sent must not undo or fail it.
      log.warn("lifecycle events not published", {
        types: events.map((e) => e.type),
        imageId: events[0]?.detail.image_id,
        error: error instanceof Error ? error.message : String(error),
      });
      failed?.(events, error);
    }
  };
}

/**
 * `repository`, publishing `image.created` after each create and the events of each transition after it
 * is written. Every other method is the repository's own.
 */
export function publishingImages<R extends ImageRepository>(
  repository: R,
  sink: LifecycleEventSink,
  log: Logger,
  options: {
    failed?: PublishFailureCounter;
    /** The request creating a record, written into it (`request_id`) for its import to carry on. */
    requestId?: () => string | undefined;
  } = {},
): R {
  const publish = publisher(sink, log, options.failed);
  const create: ImageRepository["create"] = async (created) => {
    const requestId = options.requestId?.();
    const record = requestId ? { ...created, request_id: requestId } : created;
    await repository.create(record);
    await publish([
      {
        type: "image.created",
        detail: {
          ...image(record),
          name: record.name,
          visibility: record.visibility,
          disk_format: record.disk_format,
          upload_size: record.upload_size,
        },
      },
    ]);
  };
  const transition: ImageRepository["transition"] = async (id, name, changes, options) => {
    const record = await repository.transition(id, name, changes, options);
    await publish(
      transitionEvents(name, record, {
        takeover: options?.allowExpiredLeaseFrom !== undefined,
        // The importer starts with a progress record of the staged bytes; a web-download fetch without.
        webDownload: changes.import_progress === undefined,
      }),
    );
    return record;
  };
  return overriding(repository, { create, transition });
}

/** `members`, publishing `image.member.created|updated|deleted` after each change. */
export function publishingMembers<R extends MemberRepository>(
  members: R,
  owner: (imageId: string) => Promise<string | undefined>,
  sink: LifecycleEventSink,
  log: Logger,
  failed?: PublishFailureCounter,
): R {
  const publish = publisher(sink, log, failed);
  const event = async (
    type: LifecycleEventType,
    m: Pick<ImageMember, "image_id" | "member_id"> & { status?: string },
  ): Promise<LifecycleEvent> => ({
    type,
    detail: {
      image_id: m.image_id,
      project_id: (await owner(m.image_id)) ?? "",
      member_id: m.member_id,
      ...(m.status ? { status: m.status } : {}),
    },
  });
  const add: MemberRepository["add"] = async (member, image) => {
    await members.add(member, image);
    await publish([await event("image.member.created", member)]);
  };
  const setStatus: MemberRepository["setStatus"] = async (imageId, memberId, status, updatedAt) => {
    const updated = await members.setStatus(imageId, memberId, status, updatedAt);
    await publish([await event("image.member.updated", updated)]);
    return updated;
  };
  const remove: MemberRepository["remove"] = async (imageId, memberId) => {
    await members.remove(imageId, memberId);
    await publish([await event("image.member.deleted", { image_id: imageId, member_id: memberId })]);
  };
  return overriding(members, { add, setStatus, remove });
}

/** `target` with some methods replaced; every other property read from `target` itself. */
function overriding<T extends object>(target: T, replaced: Record<string, unknown>): T {
  return new Proxy(target, {
    get(t, prop, receiver) {
      if (typeof prop === "string" && Object.hasOwn(replaced, prop)) return replaced[prop];
      const value = Reflect.get(t, prop, receiver);
      return typeof value === "function" ? value.bind(t) : value;
    },
  });
}
