import { readFile } from "node:fs/promises";
import { extname, join } from "node:path";
import type { PageFile, PageFiles } from "../../http/routes/page.ts";

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
};

/**
 * The page's files from a folder of the function's package (`ui/` beside the bundle, written by
 * scripts/build.mjs). Read on first request, then kept: about 0.5 MB, the same for the life of the
 * function. Only the types above are served.
 */
export class FolderPageFiles implements PageFiles {
  private readonly cache = new Map<string, Promise<PageFile | undefined>>();
  constructor(private readonly dir: string) {}

  read(name: string): Promise<PageFile | undefined> {
    const contentType = CONTENT_TYPES[extname(name)];
    if (contentType === undefined) return Promise.resolve(undefined);
    let file = this.cache.get(name);
    if (!file) {
      file = readFile(join(this.dir, name)).then(
        (body) => ({ body: new Uint8Array(body), contentType }),
        (error: NodeJS.ErrnoException) => {
          this.cache.delete(name);
          if (error.code === "ENOENT") return undefined;
          throw error;
        },
      );
      this.cache.set(name, file);
    }
    return file;
  }
}
