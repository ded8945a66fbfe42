import {
  createInspector,
  type InspectionResult,
  type InspectOptions,
} from "../../../functions/core/formats/index.ts";

export const TEST_LIMITS = { maxVirtualSize: 2 ** 40, maxGzipRatio: 2000 } as const;

export interface InspectRun {
  result?: InspectionResult;
  error?: unknown;
  peakCapturedBytes: number;
}

/** Streams `bytes` through a fresh inspector `chunkSize` bytes at a time. */
export async function inspectBytes(
  bytes: Uint8Array,
  chunkSize: number,
  opts: Partial<InspectOptions> = {},
): Promise<InspectRun> {
  const inspector = createInspector({ totalSize: bytes.length, ...TEST_LIMITS, ...opts });
  try {
    for (let offset = 0; offset < bytes.length; offset += chunkSize) {
      await inspector.update(bytes.subarray(offset, offset + chunkSize));
    }
    const result = await inspector.finish();
    return { result, peakCapturedBytes: inspector.peakCapturedBytes };
  } catch (error) {
    return { error, peakCapturedBytes: inspector.peakCapturedBytes };
  }
}

/** Same as `inspectBytes` but throws the inspector's error. */
export async function inspectOrThrow(
  bytes: Uint8Array,
  chunkSize = 8 * 1024 * 1024,
): Promise<InspectionResult> {
  const run = await inspectBytes(bytes, chunkSize);
  if (run.error !== undefined) throw run.error;
  return run.result as InspectionResult;
}
