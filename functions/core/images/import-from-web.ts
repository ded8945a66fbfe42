import { ConflictError, ForbiddenError, StaleStatusError, UriNotAllowedError } from "../errors.ts";
import type { Caller } from "../image/access.ts";
import type { ImageContext } from "./context.ts";

function parseUri(uri: string): URL {
  try {
    return new URL(uri);
  } catch (err) {
    throw new UriNotAllowedError(`The web-download URI is not a valid URL: ${uri.slice(0, 200)}`, {
      cause: err,
    });
  }
}

/** Glance's `web-download` import method: the API's half (checks, lease, dispatch). */
export function imageWebDownload(ctx: ImageContext) {
  const { deps, images, clock } = ctx;
  return {
    /**
     * Starts a `web-download` import: the URL is checked now (scheme, public addresses) so a refusal is a
     * clear 400; the fetch itself runs in the background and re-checks every redirect.
     */
    async importFromWeb(id: string, uri: string, caller: Caller): Promise<void> {
      const image = await ctx.modifiableImage(id, caller, "import");
      const web = deps.webDownload;
      if (!web) throw new ForbiddenError("The web-download import method is not enabled.", "METHOD_DISABLED");
      if (image.status !== "queued") {
        throw new ConflictError(
          `Image ${id} is ${image.status}; only a queued image can be imported.`,
          "NOT_QUEUED",
        );
      }
      const url = parseUri(uri);
      // The address checks (and ipaddr.js) are loaded by the first web-download, not by every cold start.
      const { checkTarget } = await import("../web-download.ts");
      await checkTarget(url, web.resolve, web);
      // One import at a time: the image leaves `queued` now, held by the fetch until it has staged the
      // bytes. A second request, or an upload through the link, finds it `importing` and is refused.
      const started = clock.now();
      const lease = new Date(started.getTime() + web.leaseSeconds * 1000).toISOString();
      await images
        .transition(
          id,
          "startImport",
          { updated_at: started.toISOString(), import_lease_until: lease },
          { from: image },
        )
        .catch((err: unknown) => {
          if (!(err instanceof StaleStatusError)) throw err;
          throw new ConflictError(`Image ${id} is no longer queued; another import started.`, "NOT_QUEUED", {
            cause: err,
          });
        });
      try {
        await web.dispatcher.dispatch({ imageId: id, uri: url.href, lease });
      } catch (err) {
        await images
          .transition(
            id,
            "releaseImport",
            { updated_at: ctx.now(), import_lease_until: null },
            { leaseIs: lease },
          )
          .catch((e: unknown) => deps.log.warn("could not release image", { imageId: id, error: String(e) }));
        throw err;
      }
      deps.log.info("web-download started", { imageId: id, host: url.host });
    },
  };
}
