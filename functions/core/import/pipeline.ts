import { convertToQcow2, convertToRaw, gunzipSource, type SourceFormat } from "../convert/index.ts";
import type { SequentialSource } from "../convert/ports.ts";
import { HangarError, ImportRejectedError } from "../errors.ts";
import {
  createInspector,
  type DetectionResult,
  detectFormat,
  type InspectionResult,
  type Inspector,
  UnsafeImageError,
  UnsupportedFormatError,
} from "../formats/index.ts";
import type { RangeReader } from "../formats/types.ts";
import type { ObjectStore } from "../ports.ts";
import { createDigester, type DigestName, type DigestValues } from "./digests.ts";

/** The operator's choices the importer follows (shown by `/v2/info/import`). */
export interface ImportPolicy {
  preferredFormat: string;
  acceptedFormats: readonly string[];
  maxVirtualSize: number;
  maxGzipRatio: number;
}

/** Bytes read from each end of the upload to decide, before the single pass, whether to convert. */
const HEAD_PROBE = 1024 * 1024;
const TAIL_PROBE = 4096;
/** Below this size a hashing worker costs more to start than it saves. */
const INLINE_HASH_BELOW = 8 * 1024 * 1024;

/** Declared formats that name a raw byte image under another name. */
const RAW_ALIASES = new Set(["raw", "ami", "ari", "aki"]);

function declaredMatches(declared: string, detected: string): boolean {
  if (declared === detected) return true;
  // An ISO is a raw byte image; Glance's own clients label ISOs either way.
  return RAW_ALIASES.has(declared) && (detected === "raw" || detected === "iso");
}

export interface PipelineResult {
  detected: DetectionResult;
  inspection: InspectionResult;
  storedFormat: string;
  converted: boolean;
  storedSize: number;
  /** Digests of the stored bytes (md5, os_hash_algo). */
  stored: DigestValues;
  /** Digests of the uploaded bytes (sha256 when the client declared one). */
  upload: DigestValues;
  uploadBytes: number;
}

export interface PipelineInput {
  key: string;
  outputKey: string;
  size: number;
  declaredFormat: string | null;
  declaredSha256: boolean;
  osHashAlgo: DigestName;
  policy: ImportPolicy;
  objects: ObjectStore;
  signal: AbortSignal;
  onProgress: (bytesRead: number) => void;
}

/**
 * One sequential read of the staged object, shared: the converter may stop early, and whatever it
 * leaves is drained afterwards so the upload's digests and the inspector always see every byte.
 */
class SharedRead implements SequentialSource {
  private readonly it: AsyncIterator<Uint8Array>;
  private started = false;
  bytes = 0;

  constructor(
    source: AsyncIterable<Uint8Array>,
    private readonly observe: (chunk: Uint8Array) => Promise<void>,
  ) {
    this.it = source[Symbol.asyncIterator]();
  }

  private queue: Promise<unknown> = Promise.resolve();

  /** Serialised, so chunks reach the observers in order even if the converter reads ahead. */
  private next(): Promise<Uint8Array | undefined> {
    const result = this.queue.then(async () => {
      const r = await this.it.next();
      if (r.done) return undefined;
      this.bytes += r.value.byteLength;
      await this.observe(r.value);
      return r.value;
    });
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** The converter's view; ending it early does not close the underlying read. */
  async *stream(): AsyncGenerator<Uint8Array> {
    if (this.started) throw new Error("the staged object is read once");
    this.started = true;
    for (let c = await this.next(); c !== undefined; c = await this.next()) yield c;
  }

  async drain(): Promise<void> {
    this.started = true;
    while ((await this.next()) !== undefined) {}
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

/** zlib's own errors (truncated or corrupt deflate data) say the upload is broken, not the network. */
const isZlibError = (err: unknown): err is Error & { code: string } =>
  err instanceof Error && String((err as unknown as { code?: unknown }).code ?? "").startsWith("Z_");

const isPermanentRefusal = (err: unknown) =>
  err instanceof HangarError && (err.reason === "UNSUPPORTED_FORMAT" || err.reason === "UNSAFE_IMAGE");

/** The inspector's refusal of the whole upload, if it has one. */
async function inspectorVerdict(read: SharedRead, inspector: Inspector): Promise<HangarError | undefined> {
  try {
    await read.drain();
    await inspector.finish();
    return undefined;
  } catch (e) {
    return e instanceof UnsafeImageError || e instanceof UnsupportedFormatError ? e : undefined;
  }
}

/** Starts an iterable (so its first chunk is ready) and gives back one that yields everything. */
async function peek(source: AsyncIterable<Uint8Array>): Promise<AsyncIterable<Uint8Array>> {
  const it = source[Symbol.asyncIterator]();
  const first = await it.next();
  return (async function* () {
    if (first.done) return;
    yield first.value;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  })();
}

/**
 * Detects the upload's format from its two ends, then in one pass over the staged object: hashes it,
 * inspects it, and stores it as it is (accepted format) or converted to the preferred format, hashing
 * what is stored. Throws `ImportRejectedError` (and the formats' typed errors) for permanent failures.
 */
export async function runPipeline(input: PipelineInput): Promise<PipelineResult> {
  const { objects, key, size, policy, signal } = input;
  const head = await objects.readRange(key, 0, Math.min(size, HEAD_PROBE), signal);
  const tailStart = Math.max(0, size - TAIL_PROBE);
  const tail = await objects.readRange(key, tailStart, size - tailStart, signal);
  const detected = detectFormat(head, tail, size);
  if (input.declaredFormat !== null && !declaredMatches(input.declaredFormat, detected.format)) {
    throw new ImportRejectedError(
      "FORMAT_MISMATCH",
      `The image declares disk_format ${input.declaredFormat} but the upload is ${detected.format}` +
        `${detected.compression === "gzip" ? " (gzip-compressed)" : ""}.`,
    );
  }
  const gzip = detected.compression === "gzip";
  // Converted when the format is not accepted as it is; a gzip-wrapped upload is at least unwrapped.
  const convert = !policy.acceptedFormats.includes(detected.format);
  const storedFormat = convert ? policy.preferredFormat : detected.format;
  const transformed = convert || gzip;

  const inspector = createInspector({
    totalSize: size,
    maxVirtualSize: policy.maxVirtualSize,
    maxGzipRatio: policy.maxGzipRatio,
    signal,
  });
  const storedNames: DigestName[] = ["md5", input.osHashAlgo];
  const uploadNames: DigestName[] = input.declaredSha256 ? ["sha256"] : [];
  const inline = size < INLINE_HASH_BELOW;
  // The stored bytes are hashed as the store writes them, reading its part buffers in place; the
  // uploaded bytes as they are read, only when they differ from the stored ones.
  const storedDigests = createDigester(transformed ? storedNames : [...storedNames, ...uploadNames], {
    inline,
    inPlace: true,
  });
  const uploadDigests =
    transformed && uploadNames.length > 0 ? createDigester(uploadNames, { inline }) : undefined;
  const read = new SharedRead(objects.read(key, signal), async (chunk) => {
    const wait = uploadDigests?.update(chunk);
    if (wait) await wait;
    await inspector.update(chunk);
    input.onProgress(read.bytes);
  });

  try {
    if (detected.format === "luks") {
      // Nothing to store, but the inspector's checks still run so a hostile volume gets its own reason.
      await read.drain();
      await inspector.finish();
      throw new ImportRejectedError(
        "UNSUPPORTED_FORMAT",
        "The upload is a luks-encrypted volume; Hangar stores disk images only.",
      );
    }
    let output: AsyncIterable<Uint8Array>;
    // The stored object's expected size, for the multipart part size (S3 allows 10,000 parts).
    let sizeHint = size;
    if (!convert && !gzip) {
      output = read.stream();
    } else if (!convert) {
      // Bounded by the gzip-bomb check: the inspector stops the upload beyond this ratio.
      sizeHint = Math.min(policy.maxVirtualSize, size * policy.maxGzipRatio);
      output = gunzipSource(read).stream(signal);
    } else {
      const range: RangeReader = {
        size,
        read: (offset, length, s) => objects.readRange(key, offset, length, s ?? signal),
      };
      const source = gzip ? { sequential: gunzipSource(read) } : { range, sequential: read, size };
      const from: SourceFormat = detected.format === "iso" ? "raw" : (detected.format as SourceFormat);
      // Smaller read windows than the converter's defaults keep the whole importer, multipart buffers
      // included, near 256 MiB; bench/ measured no loss of speed.
      let virtualSize: number | undefined;
      const options = {
        signal,
        maxVirtualSize: policy.maxVirtualSize,
        windowSize: 4 << 20,
        readAhead: 2,
        // The store copies each chunk into a part before asking for the next: buffers are reused.
        recycle: true,
        onMap: (map: { virtualSize: number }) => {
          virtualSize = map.virtualSize;
        },
      };
      if (storedFormat === "qcow2") output = convertToQcow2(from, source, options);
      else if (storedFormat === "raw") output = convertToRaw(from, source, options);
      else {
        throw new ImportRejectedError(
          "UNSUPPORTED_FORMAT",
          `The operator prefers ${storedFormat}, which Hangar cannot convert to; ask them to prefer raw or qcow2.`,
        );
      }
      // The first chunk comes once the converter has mapped the image, and with it the output's size.
      output = await peek(output);
      sizeHint = virtualSize ?? sizeHint;
    }
    const written = await objects.write(input.outputKey, output, signal, {
      sizeHint,
      tap: (bytes) => storedDigests.update(bytes),
    });
    await read.drain();
    if (read.bytes !== size) {
      throw new ImportRejectedError(
        "SIZE_MISMATCH",
        `Read ${read.bytes} bytes of an upload of ${size} bytes.`,
      );
    }
    const inspection = await inspector.finish();
    if (inspection.format !== detected.format) {
      throw new ImportRejectedError(
        "UNSAFE_IMAGE",
        `The upload looked like ${detected.format} at its ends but inspects as ${inspection.format}.`,
      );
    }
    const stored = await storedDigests.digest();
    const upload = uploadDigests ? await uploadDigests.digest() : transformed ? {} : stored;
    return {
      detected,
      inspection,
      storedFormat,
      converted: transformed,
      storedSize: written.size,
      stored,
      upload,
      uploadBytes: read.bytes,
    };
  } catch (caught) {
    const err = isZlibError(caught)
      ? new ImportRejectedError(
          "UNSAFE_IMAGE",
          `malformed header: the gzip stream is invalid (${caught.message})`,
          {
            cause: caught,
          },
        )
      : caught;
    // A converter refuses what it cannot map (a backing file, say) before the inspector has seen the
    // tail it needs for a verdict. The inspector's named check is the better reason: read the rest
    // (no conversion, no writes) and let it speak.
    const verdict = convert && isPermanentRefusal(err) ? await inspectorVerdict(read, inspector) : undefined;
    uploadDigests?.close();
    storedDigests.close();
    await read.close().catch(() => undefined);
    throw verdict ?? err;
  }
}
