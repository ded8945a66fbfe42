import { ForbiddenError, StaleStatusError } from "../errors.ts";
import { type Caller, canDeactivate } from "../image/access.ts";
import { TRANSITIONS } from "../image/transitions.ts";
import { asConflict, type ImageContext } from "./context.ts";

/** Glance's image actions: stop and restart downloads of an active image. */
export function imageActions(ctx: ImageContext) {
  /**
   * Takes the `deactivate` or `reactivate` edge. Which statuses allow it is the transition table's
   * business alone: the conditional write refuses the others, and the status it found names the refusal.
   */
  async function act(id: string, action: "deactivate" | "reactivate", caller: Caller): Promise<void> {
    const image = await ctx.visibleImage(id, caller);
    if (!canDeactivate(image, caller))
      throw new ForbiddenError(`You are not authorized to complete ${action} action.`);
    try {
      await ctx.images.transition(id, action, { updated_at: ctx.now() }, { from: image });
    } catch (err) {
      const status = err instanceof StaleStatusError ? err.current?.status : undefined;
      // A status the edge allows means a concurrent write won the race, not a refusal: retryable.
      const allowed: readonly string[] = TRANSITIONS[action].from;
      if (status === undefined || status === "deleted" || allowed.includes(status)) asConflict(err, id);
      throw new ForbiddenError(`Not allowed to ${action} image in status '${status}'`, "BAD_STATUS");
    }
  }

  return {
    /** Stops downloads of an active image (admins and, as in Glance Zed's legacy policy, the owner). */
    deactivate: (id: string, caller: Caller) => act(id, "deactivate", caller),
    reactivate: (id: string, caller: Caller) => act(id, "reactivate", caller),
  };
}
