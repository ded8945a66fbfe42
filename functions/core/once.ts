/**
 * `make()`, computed the first time it is asked for and kept: for what a module would otherwise build at
 * load although only some calls need it. zod schemas are the main case: building one costs every cold
 * start its construction, whether or not a request ever checks a value with it (docs/deploy.md).
 */
export function once<T>(make: () => T): () => T {
  let kept: { value: T } | undefined;
  return () => {
    kept ??= { value: make() };
    return kept.value;
  };
}
