import { zValidator } from "@hono/zod-validator";
import type { Context, MiddlewareHandler } from "hono";
import type * as z from "zod/mini";
import { InvalidRequestError, UnsupportedMediaTypeError } from "../core/errors.ts";
import { describeZod } from "./errors.ts";

/** The media types the router's JSON validator reads (application/json, application/*+json). */
const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/;

/** The request's media type, lowercase, without parameters; "" when none is given. */
export const mediaTypeOf = (c: Context): string =>
  (c.req.header("content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";

/** Parses a JSON text, or refuses it with Glance's 400. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new InvalidRequestError("The request body is not valid JSON.");
  }
}

/**
 * Reads the body before the validator does, so that what the router's JSON validator would silently take
 * as `{}` is refused instead: a body sent with another media type is 415, malformed JSON is 400. An optional
 * body may be empty (it is read as `{}`).
 */
function jsonText(optional: boolean): MiddlewareHandler {
  return async (c, next) => {
    const text = await c.req.text();
    if (text.trim() === "") {
      if (!optional) parseJson(text);
      // The validator reads the body through Hono's body cache (which holds promises of each reading):
      // an empty optional body is read as an empty object.
      (c.req.bodyCache as Record<string, unknown>).text = Promise.resolve("{}");
    } else if (!JSON_MEDIA_TYPE.test(mediaTypeOf(c))) {
      throw new UnsupportedMediaTypeError(
        `Unsupported Content-Type '${mediaTypeOf(c) || "(none)"}': send application/json.`,
      );
    } else {
      parseJson(text);
    }
    await next();
  };
}

/**
 * Validates a JSON request body with `schema()` through the router's validator (`@hono/zod-validator`); the
 * handler reads it with `c.req.valid("json")`. A body that breaks the schema is Glance's 400 naming the
 * problem (`Invalid <what>: field: problem`).
 */
export function jsonBody<S extends z.ZodMiniType>(
  schema: () => S,
  what: string,
  options: { optional?: boolean } = {},
) {
  // The schema and its validator are made by the first request that sends such a body, not when the app
  // is built: most cold starts never see most bodies (docs/deploy.md).
  const make = () =>
    zValidator("json", schema(), (result) => {
      if (!result.success) throw new InvalidRequestError(`Invalid ${what}: ${describeZod(result.error)}`);
    });
  let made: ReturnType<typeof make> | undefined;
  const validate = ((c, next) => {
    made ??= make();
    return made(c, next);
  }) as ReturnType<typeof make>;
  return [jsonText(options.optional ?? false), validate] as const;
}
