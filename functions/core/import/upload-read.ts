/**
 * One read of the staged upload and everything it feeds: the inspector, the upload's digests and the
 * progress report, plus the digester of the stored bytes that the store's writes tap.
 */
import type { SequentialSource } from "../convert/ports.ts";
import { ImportRejectedError } from "../errors.ts";
import {
  createInspector,
  type DetectionResult,
  type InspectionResult,
  type Inspector,
  UnsafeImageError,
  UnsupportedFormatError,
} from "../formats/index.ts";
import type { ObjectRead, ObjectStore } from "../ports.ts";
import { createDigester, type Digester, type DigestName, type DigestValues } from "./digests.ts";
import type { ImportPolicy } from "./plan.ts";

/** Below this size a hashing worker costs more to start than it saves. */
const INLINE_HASH_BELOW = 8 * 1024 * 1024;

/**
 * One sequential read of the staged object, shared: the converter may stop early, and whatever it
 * leaves is drained afterwards so the upload's digests and the inspector always see every byte.
 * A chunk the read lends (see `ObjectRead`) is given back once the observers are done with it, unless the
 * converter takes it: then the converter gives it back (through `release`) when it is done with it.
 */
export class SharedRead implements SequentialSource {
  private readonly it: AsyncIterator<Uint8Array>;
  private readonly giveBack: ((chunk: Uint8Array) => void) | undefined;
  private started = false;
  bytes = 0;

  constructor(
    source: ObjectRead,
    private readonly observe: (chunk: Uint8Array) => Promise<void>,
  ) {
    this.it = source[Symbol.asyncIterator]();
    this.giveBack = source.release?.bind(source);
  }

  private queue: Promise<unknown> = Promise.resolve();

  /**
   * Serialised, so chunks reach the observers in order even if the converter reads ahead. A chunk not
   * `handedOn` is given back as soon as the observers are done with it.
   */
  private next(handedOn: boolean): Promise<Uint8Array | undefined> {
    const result = this.queue.then(async () => {
      const r = await this.it.next();
      if (r.done) return undefined;
      this.bytes += r.value.byteLength;
      try {
        await this.observe(r.value);
      } finally {
        if (!handedOn) this.giveBack?.(r.value);
      }
      return r.value;
    });
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** The converter's view; ending it early does not close the underlying read. */
  async *stream(): AsyncGenerator<Uint8Array> {
    if (this.started) throw new Error("the staged object is read once");
    this.started = true;
    for (let c = await this.next(true); c !== undefined; c = await this.next(true)) yield c;
  }

  /** Gives back a chunk `stream` yielded, once the converter is done with it. */
  release(chunk: Uint8Array): void {
    this.giveBack?.(chunk);
  }

  async drain(): Promise<void> {
    this.started = true;
    while ((await this.next(false)) !== undefined) {}
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

export interface UploadReadInput {
  objects: ObjectStore;
  key: string;
  size: number;
  policy: ImportPolicy;
  signal: AbortSignal;
  onProgress: (bytesRead: number) => void;
  /** Digests of the stored bytes. */
  storedNames: readonly DigestName[];
  /** Digests of the uploaded bytes; taken from the stored ones when `transformed` is false. */
  uploadNames: readonly DigestName[];
  /**
   * The stored bytes are not the uploaded ones (unwrapped or converted): the store's writes hash them.
   * Otherwise this read hashes them, and the upload is kept (or copied by storage).
   */
  transformed: boolean;
  /** The upload's ETag when its size was taken: a replaced upload fails the read. */
  ifMatch?: string | undefined;
  /** The upload's version when its size was taken: the read reads it whatever came after it. */
  versionId?: string | undefined;
}

/** The digests one read of the upload gave. */
export interface UploadDigests {
  stored: DigestValues;
  upload: DigestValues;
}

/** One read of the upload from its start; a fallback plan that must read it again opens another. */
export class UploadRead {
  readonly read: SharedRead;
  private readonly inspector: Inspector;
  private readonly storedDigests: Digester;
  private readonly uploadDigests: Digester | undefined;

  constructor(private readonly input: UploadReadInput) {
    const { size, policy, signal, transformed, storedNames, uploadNames } = input;
    this.inspector = createInspector({
      totalSize: size,
      maxVirtualSize: policy.maxVirtualSize,
      maxGzipRatio: policy.maxGzipRatio,
      signal,
    });
    const inline = size < INLINE_HASH_BELOW;
    // Bytes stored as they were uploaded are hashed as they are read (storage copies them); other
    // stored bytes as the store writes them, reading its part buffers in place. The uploaded bytes
    // get digests of their own only when they differ from the stored ones.
    this.storedDigests = createDigester(transformed ? storedNames : [...storedNames, ...uploadNames], {
      inline,
      inPlace: true,
    });
    this.uploadDigests =
      transformed && uploadNames.length > 0 ? createDigester(uploadNames, { inline }) : undefined;
    const copied = transformed ? undefined : this.storedDigests;
    const source = input.objects.read(input.key, signal, {
      ...(input.ifMatch ? { ifMatch: input.ifMatch } : {}),
      ...(input.versionId ? { versionId: input.versionId } : {}),
    });
    const read: SharedRead = new SharedRead(source, async (chunk) => {
      const wait = (copied ?? this.uploadDigests)?.update(chunk);
      if (wait) await wait;
      await this.inspector.update(chunk);
      input.onProgress(read.bytes);
    });
    this.read = read;
  }

  /** Given to the store's writes of a transformed output: hashes the stored bytes. */
  readonly tap = (bytes: Uint8Array) => {
    if (!this.input.transformed) throw new Error("an upload stored as it is is hashed by its read");
    return this.storedDigests.update(bytes);
  };

  /** Reads what is left and runs the inspector's checks to their end. */
  async inspectAll(): Promise<InspectionResult> {
    await this.read.drain();
    return this.inspector.finish();
  }

  /** The inspector's refusal of the whole upload, if it has one; any other failure of the read is not. */
  async verdict(): Promise<UnsafeImageError | UnsupportedFormatError | undefined> {
    try {
      await this.inspectAll();
      return undefined;
    } catch (e) {
      return e instanceof UnsafeImageError || e instanceof UnsupportedFormatError ? e : undefined;
    }
  }

  private finished: Promise<InspectionResult> | undefined;

  /**
   * Reads what is left, checks every byte was read, and runs the inspector's checks to their end; the
   * same result however often it is asked.
   */
  finish(): Promise<InspectionResult> {
    this.finished ??= this.finishOnce();
    return this.finished;
  }

  /** `finish`, and the inspection must agree with the format `detected` at the object's ends. */
  async inspected(detected: DetectionResult): Promise<InspectionResult> {
    const inspection = await this.finish();
    if (inspection.format !== detected.format) {
      throw new ImportRejectedError(
        "UNSAFE_IMAGE",
        `The upload looked like ${detected.format} at its ends but inspects as ${inspection.format}.`,
      );
    }
    return inspection;
  }

  private async finishOnce(): Promise<InspectionResult> {
    await this.read.drain();
    const { size } = this.input;
    if (this.read.bytes !== size) {
      throw new ImportRejectedError(
        "SIZE_MISMATCH",
        `Read ${this.read.bytes} bytes of an upload of ${size} bytes.`,
      );
    }
    return this.inspector.finish();
  }

  /** The digests of the stored and the uploaded bytes; once, after `finish`. */
  async digests(): Promise<UploadDigests> {
    const stored = await this.storedDigests.digest();
    const upload = this.uploadDigests
      ? await this.uploadDigests.digest()
      : this.input.transformed
        ? {}
        : stored;
    return { stored, upload };
  }

  /** Releases the digesters and the read without a result (failure paths, a fallback's restart). */
  async close(): Promise<void> {
    this.uploadDigests?.close();
    this.storedDigests.close();
    await this.read.close().catch(() => undefined);
  }
}
