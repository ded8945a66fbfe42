/**
 * An adapter made on the first call of one of its methods, from a module imported then: the build puts
 * what only that module needs (the S3 client, for one) in a chunk of its own beside the bundle, which a
 * function's init does not load, nor a request that never calls the adapter (docs/deploy.md).
 *
 * Every method answers at once with a promise of what the loaded adapter's method gives, which can also
 * be iterated with `for await`: it serves methods that return a promise and methods that return an async
 * iterable (`read`, `list`) alike, and a chunk of a read that lends them goes back through it (`release`,
 * see ObjectRead). For objects used through their methods only (ports), never fields.
 */
export function lazily<T extends object>(load: () => Promise<T>): T {
  let loaded: Promise<T> | undefined;
  const calls = new Map<PropertyKey, (...args: unknown[]) => unknown>();
  const method =
    (name: string) =>
    (...args: unknown[]) => {
      loaded ??= load().catch((err: unknown) => {
        // A failed import is tried again by the next call rather than remembered.
        loaded = undefined;
        throw err;
      });
      const result = loaded.then((target) => {
        const fn = (target as Record<string, unknown>)[name];
        if (typeof fn !== "function") throw new TypeError(`${name} is not a method of the loaded adapter`);
        return fn.apply(target, args) as unknown;
      });
      let settled: { release?: (chunk: unknown) => void } | undefined;
      result.then(
        (value) => {
          settled = value as typeof settled;
        },
        () => undefined,
      );
      return Object.assign(result, {
        async *[Symbol.asyncIterator]() {
          yield* (await result) as AsyncIterable<unknown>;
        },
        // A read that lends its chunks (ObjectRead) takes them back through its own `release`.
        release(chunk: unknown) {
          settled?.release?.(chunk);
        },
      });
    };
  return new Proxy({} as T, {
    get(_, name) {
      // Not a thenable (`await lazily(…)` gives the proxy itself), and no symbol is a method.
      if (typeof name !== "string" || name === "then") return undefined;
      const known = calls.get(name);
      if (known) return known;
      const fn = method(name);
      calls.set(name, fn);
      return fn;
    },
  });
}
