import { AsyncLocalStorage } from "node:async_hooks";

/**
 * What every log line, metric and lifecycle event of one piece of work carries: the request id the API
 * returned to the client (`x-openstack-request-id`), carried onto the image's import, and the image.
 */
export interface WorkContext {
  request_id?: string;
  image_id?: string;
}

const storage = new AsyncLocalStorage<WorkContext>();

/** The context of the work running now (empty outside any). */
export const currentContext = (): WorkContext => storage.getStore() ?? {};

/** Runs `fn` with `fields` added to the current context, for it and everything it awaits. */
export function withContext<T>(fields: WorkContext, fn: () => T): T {
  const defined = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
  return storage.run({ ...storage.getStore(), ...defined }, fn);
}
