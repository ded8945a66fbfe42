import {
  convertToQcow2,
  convertToRaw,
  gunzipSource,
  NeedsRangedReadsError,
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

/**
 * Passes an unwrapped gzip upload on, keeping its last `TAIL_PROBE` bytes back until the end: there it
 * detects the image again from both its ends (a fixed vhd's footer is the last 512 bytes) and, when
 * that says another format than `expected`, throws NeedsRangedReadsError instead of passing them on,
 * so the store aborts the write.
 */
async function* detectedAgainAtEnd(
  source: AsyncIterable<Uint8Array>,
  expected: string,
): AsyncGenerator<Uint8Array> {
  const head = new Uint8Array(HEAD_PROBE);
  let headLength = 0;
  let held = new Uint8Array(0);
  let total = 0;
  for await (const chunk of source) {
    if (headLength < HEAD_PROBE) {
      const n = Math.min(HEAD_PROBE - headLength, chunk.length);
      head.set(chunk.subarray(0, n), headLength);
      headLength += n;
    }
    total += chunk.length;
    if (chunk.length >= TAIL_PROBE) {
      if (held.length > 0) yield held;
      if (chunk.length > TAIL_PROBE) yield chunk.subarray(0, chunk.length - TAIL_PROBE);
      held = chunk.slice(chunk.length - TAIL_PROBE);
    } else {
      const joined = new Uint8Array(held.length + chunk.length);
      joined.set(held);
      joined.set(chunk, held.length);
      const excess = Math.max(0, joined.length - TAIL_PROBE);
      if (excess > 0) yield joined.subarray(0, excess);
      held = joined.slice(excess);
    }
  }
  const again = detectFormat(head.subarray(0, headLength), held, total);
  if (again.format !== expected) {
    throw new NeedsRangedReadsError(`the unwrapped image ends like ${again.format}, not ${expected}`);
  }
  if (held.length > 0) yield held;
}

/** Detects the format of a stored object from its two ends. */
async function detectStored(
  objects: ObjectStore,
  key: string,
  size: number,
  signal: AbortSignal,
): Promise<DetectionResult> {
  const head = await objects.readRange(key, 0, Math.min(size, HEAD_PROBE), signal);
  const tailStart = Math.max(0, size - TAIL_PROBE);
  const tail = await objects.readRange(key, tailStart, size - tailStart, signal);
  return detectFormat(head, tail, size);
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
  let detected = await detectStored(objects, key, size, signal);
  const gzip = detected.compression === "gzip";
  // Inside gzip only the image's start can be seen, and a fixed vhd keeps its footer at the end: an
  // image that starts like raw is known only once it is unwrapped.
  const endUnseen = gzip && detected.format === "raw";
  const checkDeclared = () => {
    if (input.declaredFormat !== null && !declaredMatches(input.declaredFormat, detected.format)) {
      throw new ImportRejectedError(
        "FORMAT_MISMATCH",
        `The image declares disk_format ${input.declaredFormat} but the upload is ${detected.format}` +
          `${detected.compression === "gzip" ? " (gzip-compressed)" : ""}.`,
      );
    }
  };
  const declaredOther = input.declaredFormat !== null && !declaredMatches(input.declaredFormat, "raw");
  if (!(endUnseen && declaredOther)) checkDeclared();
  // Converted when the format is not accepted as it is; a gzip-wrapped upload is at least unwrapped.
  let convert = false;
  let storedFormat = "";
  let from: SourceFormat = "raw";
  const decide = (d: DetectionResult) => {
    detected = d;
    convert = !policy.acceptedFormats.includes(d.format);
    storedFormat = convert ? policy.preferredFormat : d.format;
    from = d.format === "iso" ? "raw" : (d.format as SourceFormat);
  };
  decide(detected);
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
  /**
   * Unwraps the gzip upload into the spool object, detects the image again from both its ends, then
   * stores it (accepted format) or converts it with ranged reads.
   */
  const unwrapThenStore = async () => {
    spooled = true;
    const unwrapped = gunzipSource(pass.read).stream(signal);
    const spool = await objects.write(input.spoolKey, unwrapped, signal);
    decide({ ...(await detectStored(objects, input.spoolKey, spool.size, signal)), compression: "gzip" });
    checkDeclared();
    if (!convert) {
      return objects.write(input.outputKey, objects.read(input.spoolKey, signal), signal, {
        sizeHint: spool.size,
        tap,
      });
    }
    return convertInto({ range: rangeOf(input.spoolKey, spool.size) });
  };
  /** Restarts the read of the upload from its start. */
  const restartPass = async () => {
    await closePass(pass);
    pass = startPass();
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
    } else if (!convert && !(endUnseen && declaredOther)) {
      // The unwrapped size is unknown: no size hint, so the store starts with its smallest parts and
      // grows them as the body does (S3 allows 10,000).
      try {
        const output = detectedAgainAtEnd(gunzipSource(pass.read).stream(signal), detected.format);
        written = await objects.write(input.outputKey, output, signal, { tap });
      } catch (err) {
        // The unwrapped image's end says it is another format (a fixed vhd): start again, by the spool.
        if (!(err instanceof NeedsRangedReadsError)) throw err;
        await restartPass();
        written = await unwrapThenStore();
      }
    } else if (!gzip) {
      written = await convertInto({ range: rangeOf(key, size), sequential: pass.read, size });
    } else {
      // A gzip stream cannot seek. Conversion to qcow2 reads its source twice, and some images need
      // ranged reads: then the upload is unwrapped into a spool object first, which is then converted
      // with ranged reads.
      let streamed: { size: number } | undefined;
      if (storedFormat !== "qcow2" && !endUnseen) {
        try {
          streamed = await convertInto({ sequential: gunzipSource(pass.read) });
        } catch (err) {
          // An image stored out of order, or one that needs its end first (a streamOptimized vmdk's
          // footer): read the upload again from the start.
          if (!(err instanceof NeedsRangedReadsError)) throw err;
          await restartPass();
        }
      }
      written = streamed ?? (await unwrapThenStore());
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
