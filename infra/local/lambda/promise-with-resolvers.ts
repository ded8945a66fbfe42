/**
 * `Promise.withResolvers` where the runtime lacks it. aws-local-stepfunctions 3 calls it in its Map
 * state (it declares Node >= 22); the local stack and the tests also run on Node 20. Imported for its
 * effect, before any state machine runs.
 */
if (!("withResolvers" in Promise)) {
  Object.defineProperty(Promise, "withResolvers", {
    value<T>() {
      let resolve!: (v: T) => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}
