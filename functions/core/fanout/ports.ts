/** Ports of the fan-out import, beside the shared ones (`ObjectStore`, `ImageRepository`). */

/** Starts an execution of the fan-out state machine (StartExecution). */
export interface FanoutStarter {
  /** Starts execution `name` with `input`; an execution of that name that already runs is not an error. */
  start(name: string, input: { imageId: string }): Promise<void>;
}

/** One part of a multipart upload as storage lists it. */
export interface ListedPart {
  partNumber: number;
  size: number;
  etag: string;
}

/** The multipart upload of a stored image, written part by part from several invocations. */
export interface FanoutStorage {
  /** Starts a multipart upload at `key`; returns its id. */
  create(key: string): Promise<string>;
  /** Uploads `body` as part `partNumber` (replacing a part of that number). */
  uploadPart(
    key: string,
    uploadId: string,
    partNumber: number,
    body: Uint8Array,
    signal?: AbortSignal,
  ): Promise<void>;
  /** Copies bytes `[first, last]` of `from` (which must still have ETag `ifMatch`) as part `partNumber`. */
  copyPart(
    key: string,
    uploadId: string,
    partNumber: number,
    from: { key: string; first: number; last: number; ifMatch?: string | undefined },
    signal?: AbortSignal,
  ): Promise<void>;
  /**
   * Copies `length` bytes of zeros inside storage (from an object of zeros) as part `partNumber`; true
   * once the part holds them. False when the copy is not zeros (its ETag is not the md5 of that many
   * zeros: the object of zeros was overwritten, or storage's ETags are not md5s): the part must then be
   * sent, replacing it. Storage that cannot copy zeros has no such method, and its parts of zeros are sent.
   */
  copyZeros?(
    key: string,
    uploadId: string,
    partNumber: number,
    length: number,
    signal?: AbortSignal,
  ): Promise<boolean>;
  /** The parts uploaded so far; undefined when the upload does not exist (completed or aborted). */
  listParts(key: string, uploadId: string): Promise<ListedPart[] | undefined>;
  complete(key: string, uploadId: string, parts: readonly ListedPart[]): Promise<void>;
  /** Aborts the upload; one already gone is not an error. */
  abort(key: string, uploadId: string): Promise<void>;
  /**
   * Exactly `length` bytes of `key` from `offset`, as a stream; with `ifMatch`, a replaced object fails
   * the read with `ObjectChangedError`.
   */
  readRange(
    key: string,
    offset: number,
    length: number,
    options?: { ifMatch?: string | undefined; signal?: AbortSignal | undefined },
  ): AsyncIterable<Uint8Array>;
}

/** Counters of `import_progress` written by atomic updates, while the image's execution is the one named. */
export interface FanoutProgressStore {
  /**
   * Adds to numeric fields of `import_progress` (DynamoDB ADD) and sets others, with the import lease
   * renewed to `leaseUntil`, only while the image is `importing` under `execution`; false when it is not.
   */
  record(
    id: string,
    execution: string,
    changes: {
      add?: Record<string, number>;
      set?: Record<string, number>;
      /** Counts `add` once per this number (a range's index): a second write with it changes nothing. */
      once?: number;
    },
    leaseUntil: string,
    now: string,
  ): Promise<boolean>;
}
