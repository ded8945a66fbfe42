import { readFileSync } from "node:fs";
import { gunzipSync, constants as zlibConstants } from "node:zlib";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { beforeAll, describe, expect, it } from "vitest";
import { generateHostileCorpus, type HostileImage } from "../fixtures/hostile/build-hostile.ts";
import { api, getStack, mintToken, s3Client, uploadThroughLink, waitForStatus } from "./setup/stack.ts";

// Generated (or read from the cache) while the file is collected, so each image is a test of its own.
const corpus: HostileImage[] = generateHostileCorpus();
let token: string;

beforeAll(async () => {
  // A project of its own: the corpus is large, and other tests count images of the demo projects.
  token = await mintToken({ sub: "hostile", project_id: "project-hostile", roles: ["member"] });
});

async function importOne(image: HostileImage): Promise<Record<string, unknown>> {
  const res = await api("/v2/images", { method: "POST", body: JSON.stringify({ name: image.name }) }, token);
  const created = await uploadThroughLink(res, readFileSync(image.path));
  return waitForStatus(created.id, ["killed", "active"], token, 60_000);
}

/** The local stack's operator policy (functions/config.ts defaults). */
const STACK_MAX_GZIP_RATIO = 64;

/**
 * The corpus names what the inspector finds under its own limits; under the stack's gzip ratio of 64 a
 * small gzip upload that inflates more than that is refused as a gzip bomb first, which is also right.
 */
function expectationUnderStackPolicy(image: HostileImage): HostileImage["expect"] {
  const bytes = readFileSync(image.path);
  if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) return image.expect;
  // A truncated stream still inflates up to where it stops.
  const inflated = gunzipSync(bytes, { finishFlush: zlibConstants.Z_SYNC_FLUSH }).length;
  return inflated > STACK_MAX_GZIP_RATIO * bytes.length
    ? { kind: "unsafe", check: "gzip bomb" }
    : image.expect;
}

describe("the hostile corpus, uploaded through the real stack, is refused with the inspector's reason", () => {
  it("has an image for every check", () => {
    expect(corpus.length).toBeGreaterThan(40);
  });

  // A few at a time: the importer and MinIO share the machine's two cores with the tests.
  it.concurrent.each(corpus.map((image) => [image.name, image] as const))("%s", async (_name, image) => {
    const result = await importOne(image);
    const failure = result.failure as { reason: string; message: string } | null;
    const expected = expectationUnderStackPolicy(image);
    expect(result.status).toBe("killed");
    if (expected.kind === "unsafe") {
      expect(failure?.reason).toBe("UNSAFE_IMAGE");
      expect(failure?.message).toContain(expected.check);
      if (expected.mentions) expect(failure?.message).toContain(expected.mentions);
    } else {
      expect(failure?.reason).toBe("UNSUPPORTED_FORMAT");
      expect(failure?.message).toContain(expected.format);
    }
    const stored = await s3Client().send(
      new ListObjectsV2Command({ Bucket: getStack().bucket, Prefix: `images/${String(result.id)}` }),
    );
    expect(stored.KeyCount ?? 0).toBe(0);
  });
});
