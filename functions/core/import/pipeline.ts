import {
  convertToQcow2,
  convertToRaw,
  gunzipSource,
  NonMonotonicSourceError,
  type SourceFormat,
} from "../convert/index.ts";
import type { ConvertSource, SequentialSource } from "../convert/ports.ts";
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
import { createDigester, type Digester, type DigestName, type DigestValues } from "./digests.ts";

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
  /** The gzip-wrapped image was not stored in order: unwrapped into the spool object first. */
  spooled: boolean;
  /** Digests of the uploaded bytes (sha256 when the client declared one). */
  upload: DigestValues;
  uploadBytes: number;
}

export interface PipelineInput {
  key: string;
  outputKey: string;
  /** Scratch object for a gzip-wrapped upload whose image is not stored in order; deleted after. */
  spoolKey: string;
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

/** One read of the staged object and what it feeds. */
interface Pass {
  inspector: Inspector;
  storedDigests: Digester;
  uploadDigests: Digester | undefined;
  read: SharedRead;
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

  const storedNames: DigestName[] = ["md5", input.osHashAlgo];
  const uploadNames: DigestName[] = input.declaredSha256 ? ["sha256"] : [];
  const inline = size < INLINE_HASH_BELOW;
  /** One read of the staged object, with the inspector and digesters it feeds. */
  const startPass = (): Pass => {
    const inspector = createInspector({
      totalSize: size,
      maxVirtualSize: policy.maxVirtualSize,
      maxGzipRatio: policy.maxGzipRatio,
      signal,
    });
    // The stored bytes are hashed as the store writes them, reading its part buffers in place; the
    // uploaded bytes as they are read, only when they differ from the stored ones.
    const storedDigests = createDigester(transformed ? storedNames : [...storedNames, ...uploadNames], {
      inline,
      inPlace: true,
    });
    const uploadDigests =
      transformed && uploadNames.length > 0 ? createDigester(uploadNames, { inline }) : undefined;
    const read: SharedRead = new SharedRead(objects.read(key, signal), async (chunk) => {
      const wait = uploadDigests?.update(chunk);
      if (wait) await wait;
      await inspector.update(chunk);
      input.onProgress(read.bytes);
    });
    return { inspector, storedDigests, uploadDigests, read };
  };
  const closePass = async (p: Pass) => {
    p.uploadDigests?.close();
    p.storedDigests.close();
    await p.read.close().catch(() => undefined);
  };
  let pass = startPass();
  const tap = (bytes: Uint8Array) => pass.storedDigests.update(bytes);
  const from: SourceFormat = detected.format === "iso" ? "raw" : (detected.format as SourceFormat);
  /** Converts `source` to the preferred format into the output key, hashing what is stored. */
  const convertInto = async (source: ConvertSource): Promise<{ size: number }> => {
    let virtualSize: number | undefined;
    const options = {
      signal,
      maxVirtualSize: policy.maxVirtualSize,
      // Smaller read windows than the converter's defaults keep the whole importer, part buffers
      // included, well under 256 MiB; bench/ measured no loss of speed.
      windowSize: 4 << 20,
      readAhead: 2,
      // The store copies each chunk into a part before asking for the next: buffers are reused.
      recycle: true,
      onMap: (map: { virtualSize: number }) => {
        virtualSize = map.virtualSize;
      },
    };
    let output: AsyncIterable<Uint8Array>;
    if (storedFormat === "qcow2") output = convertToQcow2(from, source, options);
    else if (storedFormat === "raw") output = convertToRaw(from, source, options);
    else {
      throw new ImportRejectedError(
        "UNSUPPORTED_FORMAT",
        `The operator prefers ${storedFormat}, which Hangar cannot convert to; ask them to prefer raw or qcow2.`,
      );
    }
    // The first chunk comes once the converter has mapped the image, and with it the output's size
    // (the multipart part size depends on it: S3 allows 10,000 parts).
    output = await peek(output);
    return objects.write(input.outputKey, output, signal, { sizeHint: virtualSize ?? size, tap });
  };
  /** Ranged reads of a stored object, for converters that need random access. */
  const rangeOf = (object: string, objectSize: number): RangeReader => ({
    size: objectSize,
    read: (offset, length, s) => objects.readRange(object, offset, length, s ?? signal),
  });
  let spooled = false;
  /** Unwraps the gzip upload into the spool object, then converts that with ranged reads. */
  const unwrapThenConvert = async () => {
    spooled = true;
    const unwrapped = gunzipSource(pass.read).stream(signal);
    const spool = await objects.write(input.spoolKey, unwrapped, signal);
    return convertInto({ range: rangeOf(input.spoolKey, spool.size) });
  };

  try {
    if (detected.format === "luks") {
      // Nothing to store, but the inspector's checks still run so a hostile volume gets its own reason.
      await pass.read.drain();
      await pass.inspector.finish();
      throw new ImportRejectedError(
        "UNSUPPORTED_FORMAT",
        "The upload is a luks-encrypted volume; Hangar stores disk images only.",
      );
    }
    let written: { size: number };
    if (!convert && !gzip) {
      written = await objects.write(input.outputKey, pass.read.stream(), signal, { sizeHint: size, tap });
    } else if (!convert) {
      const output = gunzipSource(pass.read).stream(signal);
      // The unwrapped size is unknown: no size hint, so the store starts with its smallest parts and
      // grows them as the body does (S3 allows 10,000).
      written = await objects.write(input.outputKey, output, signal, { tap });
    } else if (!gzip) {
      written = await convertInto({ range: rangeOf(key, size), sequential: pass.read, size });
    } else {
      // A gzip stream cannot seek. Conversion to qcow2 reads its source twice, and an image stored out
      // of order needs ranged reads: either way the upload is unwrapped into a spool object first,
      // which is then converted with ranged reads.
      let streamed: { size: number } | undefined;
      if (storedFormat !== "qcow2") {
        try {
          streamed = await convertInto({ sequential: gunzipSource(pass.read) });
        } catch (err) {
          if (!(err instanceof NonMonotonicSourceError)) throw err;
          // Found out part way: read the upload again from the start.
          await closePass(pass);
          pass = startPass();
        }
      }
      written = streamed ?? (await unwrapThenConvert());
    }
    const { read, inspector, storedDigests, uploadDigests } = pass;
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
      spooled,
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
    const verdict =
      convert && isPermanentRefusal(err) ? await inspectorVerdict(pass.read, pass.inspector) : undefined;
    await closePass(pass);
    throw verdict ?? err;
  } finally {
    if (spooled) await objects.delete(input.spoolKey).catch(() => undefined);
  }
}
