import { imageActions } from "./images/actions.ts";
import { createImageContext, type ImageServiceDeps } from "./images/context.ts";
import { imageRecords } from "./images/crud.ts";
import { imageWebDownload } from "./images/import-from-web.ts";
import { imageListing } from "./images/listing.ts";
import { imageMembers } from "./images/members.ts";
import { imageTags } from "./images/tags.ts";

export type { NewImage } from "./image/create.ts";
export type { ImageServiceDeps } from "./images/context.ts";
export type { ImageView } from "./images/crud.ts";

/**
 * The image use cases behind the Glance API, one module per concern under `images/`: records (create,
 * show, update, delete, download), listing, tags, members, actions and the web-download import.
 */
export function createImageService(deps: ImageServiceDeps) {
  const ctx = createImageContext(deps);
  return {
    ...imageRecords(ctx),
    ...imageListing(ctx),
    ...imageTags(ctx),
    ...imageMembers(ctx),
    ...imageActions(ctx),
    ...imageWebDownload(ctx),
  };
}

export type ImageService = ReturnType<typeof createImageService>;
