import { HangarError, IMPORT_FAILURE_REASONS, type ImportFailureReason } from "../errors.ts";
import type { ImageRecord } from "../image/image.ts";
import type { Clock, ImageRepository, Logger } from "../ports.ts";
import type { FanoutJob } from "./job.ts";

/**
 * How long a fan-out step holds the import lease: every step renews it, and a step that runs longer
 * renews it every `FANOUT_HEARTBEAT_MS`. Longer than an importer's lease because the gaps between
 * steps include Step Functions' retry back-off (at most about a minute: 2 + 4 + 8 + 16 + 32 s), short
 * enough that an execution that dies without its cleanup leaves the image to the re-drive within
 * three minutes.
 */
export const FANOUT_LEASE_SECONDS = 150;
export const FANOUT_HEARTBEAT_MS = 30_000;

/** The image is no longer imported by this execution (taken over, deleted, finished): touch nothing. */
export class FanoutSupersededError extends HangarError {
  readonly reason = "FANOUT_SUPERSEDED";
}

/** What every step works on: the records, a clock and a log. */
export interface StepDeps {
  images: ImageRepository;
  clock: Clock;
  log: Logger;
}

/** What every step is given by the state machine: the image and the execution's own name. */
export interface StepInput {
  imageId: string;
  execution: string;
}

export const leaseUntil = (clock: Clock) =>
  new Date(clock.now().getTime() + FANOUT_LEASE_SECONDS * 1000).toISOString();

/** The image and its job, while it is `importing` under `execution`; FanoutSupersededError otherwise. */
export async function held(
  images: ImageRepository,
  { imageId, execution }: StepInput,
): Promise<{ image: ImageRecord; job: FanoutJob }> {
  if (typeof imageId !== "string" || typeof execution !== "string") {
    throw new FanoutSupersededError("a fan-out step needs imageId and execution");
  }
  const image = await images.get(imageId);
  const job = image?.import_fanout;
  if (image?.status !== "importing" || image.import_execution !== execution || !job) {
    throw new FanoutSupersededError(
      `image ${imageId} is ${image?.status ?? "gone"} and not imported by execution ${execution}`,
    );
  }
  return { image, job };
}

/** Renews the lease (and writes `changes`) while the image is `importing` under `execution`. */
export async function renew(
  deps: StepDeps,
  input: StepInput,
  changes: Partial<ImageRecord> = {},
): Promise<ImageRecord> {
  const now = deps.clock.now();
  return deps.images.update(
    input.imageId,
    { ...changes, import_lease_until: leaseUntil(deps.clock), updated_at: now.toISOString() },
    ["importing"],
    { unchanged: { import_execution: input.execution } },
  );
}

/**
 * Runs `work` while renewing the lease every `FANOUT_HEARTBEAT_MS`; a renewal the records refuse (the
 * image superseded) aborts the work's signal.
 */
export async function withHeartbeat<T>(
  deps: StepDeps,
  input: StepInput,
  work: (signal: AbortSignal) => Promise<T>,
  everyMs = FANOUT_HEARTBEAT_MS,
): Promise<T> {
  const controller = new AbortController();
  let beating = Promise.resolve();
  const timer = setInterval(() => {
    beating = beating.then(() =>
      renew(deps, input).then(
        () => undefined,
        (err: unknown) => {
          deps.log.warn("fan-out lease not renewed", { imageId: input.imageId, error: String(err) });
          if (err instanceof HangarError) controller.abort(new FanoutSupersededError(String(err)));
        },
      ),
    );
  }, everyMs);
  timer.unref?.();
  try {
    return await work(controller.signal);
  } finally {
    clearInterval(timer);
    await beating;
  }
}

/** A step's failure as the state machine carries it to Cleanup: `$.error` = { Error, Cause }. */
export interface StepError {
  Error?: string;
  Cause?: string;
}

/** The error name a step's failure is given, so Cleanup can tell the image's reason: `Hangar.<REASON>`. */
export const ERROR_PREFIX = "Hangar.";

const isReason = (r: string): r is ImportFailureReason =>
  (IMPORT_FAILURE_REASONS as readonly string[]).includes(r);

/** The error a step throws: a permanent import failure named by its reason, anything else as it is. */
export function stepError(err: unknown): unknown {
  if (err instanceof HangarError && isReason(err.reason)) {
    const named = new Error(err.message, { cause: err });
    named.name = `${ERROR_PREFIX}${err.reason}`;
    return named;
  }
  return err;
}

/** The message of a Lambda failure's Cause (`{"errorMessage": …}` in AWS), or the Cause itself. */
function causeMessage(cause: string | undefined): string | undefined {
  if (!cause) return undefined;
  try {
    const parsed = JSON.parse(cause) as { errorMessage?: unknown };
    if (typeof parsed.errorMessage === "string") return parsed.errorMessage;
  } catch {
    // not JSON: the Cause is the message
  }
  return cause;
}

/** The reason and message a user reads on the killed image, from the failure Cleanup was given. */
export function failureOf(error: StepError | undefined): { reason: ImportFailureReason; message: string } {
  const name = error?.Error ?? "";
  const reason = name.startsWith(ERROR_PREFIX) ? name.slice(ERROR_PREFIX.length) : "";
  const message = causeMessage(error?.Cause);
  if (isReason(reason) && message) return { reason, message };
  return {
    reason: "FANOUT_FAILED",
    message: `The import of this large image failed in one of its steps (${name || "unknown error"}); its parts were removed. Upload the image again, and ask the operator if it fails again.`,
  };
}
