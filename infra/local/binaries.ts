import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { access, constants, mkdir, mkdtemp, readdir, rename, rm, stat } from "node:fs/promises";
import { delimiter, dirname, join } from "node:path";
import { BinaryVerificationError, LocalStackError } from "./errors.ts";

/** An npm package pinned by its registry integrity (`sha512-<base64>`, the value in package-lock files). */
export interface PinnedPackage {
  spec: string;
  integrity: string;
}

/**
 * How to get one verified artifact into the cache: which npm package carries it, how to unpack it,
 * and the file inside whose sha256 is pinned.
 */
export interface ArtifactRecipe {
  /** Folder under the cache; a new version must get a new name so old caches are never mistaken for it. */
  dirName: string;
  pkg: PinnedPackage;
  /** Path, relative to the artifact folder, of the file whose sha256 is pinned. */
  checkedFile: string;
  sha256: string;
  /** Unpacks an already verified npm tarball so that `outDir` becomes the artifact folder. */
  unpack(tarball: string, workDir: string, outDir: string, signal?: AbortSignal): Promise<void>;
}

export interface EnsureOptions {
  /** Environment consulted for overrides (MINIO_BIN, DYNAMODB_LOCAL_JAR, PATH, JAVA_HOME); defaults to process.env. */
  env?: Record<string, string | undefined>;
  log?: (line: string) => void;
  signal?: AbortSignal;
  /** Fetches a package tarball into `destDir` and returns its path; `npm pack` unless replaced (tests). */
  pack?: (spec: string, destDir: string, signal?: AbortSignal) => Promise<string>;
}

/** MinIO RELEASE.2024-01-01T16-36-33Z, shipped inside an npm package as a gzip tar holding `bin/minio`. */
export const MINIO_RECIPE: ArtifactRecipe = {
  dirName: "minio-RELEASE.2024-01-01T16-36-33Z",
  pkg: {
    spec: "@dragon-den/packages@1.0.0-minio-0.1.20231112-1-1",
    integrity:
      "sha512-Dncol9tKUqz95XCS3pEMUyzVarutThjTcoxVkf1MoL/7UZz9HwjezNsCXJCm8Kjjh477JQhLkw3t76O6Imw5bw==",
  },
  checkedFile: "bin/minio",
  sha256: "95bfab0dc507629a91ea5ca1fa665d70565503824fee2feb427e4d0235467dcb",
  async unpack(tarball, workDir, outDir, signal) {
    await run("tar", ["-xzf", tarball, "-C", workDir, "package/package.tgz.part.aa"], signal);
    await mkdir(outDir, { recursive: true });
    // The part file is itself a complete gzip tar (the package was split into one part only).
    await run("tar", ["-xzf", join(workDir, "package", "package.tgz.part.aa"), "-C", outDir], signal);
  },
};

/** DynamoDB Local 1.25.1 as shipped by amplify-dynamodb-simulator@2.9.30 (`emulator/`). */
export const DYNAMODB_LOCAL_RECIPE: ArtifactRecipe = {
  dirName: "dynamodb-local-1.25.1",
  pkg: {
    spec: "amplify-dynamodb-simulator@2.9.30",
    integrity:
      "sha512-xTeeRLvzEfqyd5lh3bH4c0kHvSHHmmhD5ZDsHFKAQ5g2Zl6JqlFdutaQhCLHzxEp6Ry1o7TB6niIoXuQAnSewQ==",
  },
  checkedFile: "DynamoDBLocal.jar",
  sha256: "454305e9bc3e6ebcca5b62569869e31563b8d7e346474e94557b2600702146c7",
  async unpack(tarball, workDir, outDir, signal) {
    await run("tar", ["-xzf", tarball, "-C", workDir, "package/emulator"], signal);
    await rename(join(workDir, "package", "emulator"), outDir);
  },
};

export const JAVA_MISSING_MESSAGE =
  "Java 17 is needed to run DynamoDB Local: apt-get install openjdk-17-jre-headless (or set JAVA_HOME)";

/**
 * Digest of a file as the given encoding, streamed in 1 MiB reads (memory stays at one buffer).
 */
export async function digestFile(
  path: string,
  algorithm: "sha256" | "sha512",
  encoding: "hex" | "base64",
  signal?: AbortSignal,
): Promise<string> {
  const hash = createHash(algorithm);
  const stream = createReadStream(path, { highWaterMark: 1 << 20, signal });
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest(encoding);
}

/** Refuses a file whose sha512 is not the pinned npm integrity (`sha512-<base64>`). */
export async function verifyIntegrity(path: string, integrity: string, signal?: AbortSignal): Promise<void> {
  const match = /^sha512-([A-Za-z0-9+/]+={0,2})$/.exec(integrity);
  if (!match) throw new BinaryVerificationError(`unsupported integrity value ${integrity}`);
  const actual = await digestFile(path, "sha512", "base64", signal);
  if (actual !== match[1]) {
    throw new BinaryVerificationError(
      `${path} does not match its pinned integrity ${integrity} (got sha512-${actual}); refusing to unpack it`,
    );
  }
}

/** Refuses a file whose sha256 is not the pinned hex digest. */
export async function verifySha256(path: string, sha256: string, signal?: AbortSignal): Promise<void> {
  const actual = await digestFile(path, "sha256", "hex", signal);
  if (actual !== sha256.toLowerCase()) {
    throw new BinaryVerificationError(
      `${path} has sha256 ${actual}, expected ${sha256}; refusing to run it (delete the file to fetch it again)`,
    );
  }
}

/**
 * Returns the folder of a verified artifact in `cacheDir`, fetching it on first use.
 * The npm tarball is checked against its pinned integrity before it is unpacked, and the pinned file's
 * sha256 before the folder is moved into place (atomically, so a concurrent start sees all or nothing).
 * A cached copy is re-checked on every call; a mismatching one is discarded and fetched again.
 */
export async function ensureArtifact(
  recipe: ArtifactRecipe,
  cacheDir: string,
  opts: EnsureOptions = {},
): Promise<string> {
  const finalDir = join(cacheDir, recipe.dirName);
  const checked = join(finalDir, recipe.checkedFile);
  if (await exists(checked)) {
    try {
      await verifySha256(checked, recipe.sha256, opts.signal);
      return finalDir;
    } catch (err) {
      if (!(err instanceof BinaryVerificationError)) throw err;
      opts.log?.(`cached ${recipe.dirName} failed verification; fetching it again (${err.message})`);
      await rm(finalDir, { recursive: true, force: true });
    }
  }
  await mkdir(cacheDir, { recursive: true });
  const workDir = await mkdtemp(join(cacheDir, `.${recipe.dirName}-`));
  try {
    opts.log?.(`fetching ${recipe.pkg.spec} into ${cacheDir} (first run only)`);
    const pack = opts.pack ?? npmPack;
    const tarball = await pack(recipe.pkg.spec, workDir, opts.signal);
    await verifyIntegrity(tarball, recipe.pkg.integrity, opts.signal);
    const outDir = join(workDir, "out");
    await recipe.unpack(tarball, workDir, outDir, opts.signal);
    const unpacked = join(outDir, recipe.checkedFile);
    if (!(await exists(unpacked))) {
      throw new BinaryVerificationError(`${recipe.pkg.spec} does not contain ${recipe.checkedFile}`);
    }
    await verifySha256(unpacked, recipe.sha256, opts.signal);
    try {
      await rename(outDir, finalDir);
    } catch (err) {
      // Another start may have installed it meanwhile: theirs is as good as ours once it verifies.
      if (!(await exists(checked))) throw err;
      await verifySha256(checked, recipe.sha256, opts.signal);
    }
    return finalDir;
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

/** Path of a MinIO server binary: `MINIO_BIN`, else a `minio` on PATH, else the verified pinned release. */
export async function ensureMinio(cacheDir: string, opts: EnsureOptions = {}): Promise<string> {
  const env = opts.env ?? process.env;
  if (env.MINIO_BIN) {
    if (!(await isExecutable(env.MINIO_BIN))) {
      throw new LocalStackError(`MINIO_BIN=${env.MINIO_BIN} is not an executable file`);
    }
    return env.MINIO_BIN;
  }
  const onPath = await which("minio", env.PATH);
  if (onPath) return onPath;
  const dir = await ensureArtifact(MINIO_RECIPE, cacheDir, opts);
  return join(dir, MINIO_RECIPE.checkedFile);
}

/**
 * DynamoDB Local's jar and native-library folder (`DYNAMODB_LOCAL_JAR` first, else the verified pinned
 * release), and the `java` to run it with. Fails with one line naming the package to install when Java is missing.
 */
export async function ensureDynamoDbLocal(
  cacheDir: string,
  opts: EnsureOptions = {},
): Promise<{ jar: string; libDir: string; java: string }> {
  const env = opts.env ?? process.env;
  const java = await findJava(env);
  if (env.DYNAMODB_LOCAL_JAR) {
    if (!(await exists(env.DYNAMODB_LOCAL_JAR))) {
      throw new LocalStackError(`DYNAMODB_LOCAL_JAR=${env.DYNAMODB_LOCAL_JAR} does not exist`);
    }
    const libDir = env.DYNAMODB_LOCAL_LIB ?? join(dirname(env.DYNAMODB_LOCAL_JAR), "DynamoDBLocal_lib");
    return { jar: env.DYNAMODB_LOCAL_JAR, libDir, java };
  }
  const dir = await ensureArtifact(DYNAMODB_LOCAL_RECIPE, cacheDir, opts);
  return { jar: join(dir, DYNAMODB_LOCAL_RECIPE.checkedFile), libDir: join(dir, "DynamoDBLocal_lib"), java };
}

/** `$JAVA_HOME/bin/java`, else `java` on PATH; a missing Java is a one-line error saying what to install. */
export async function findJava(env: Record<string, string | undefined> = process.env): Promise<string> {
  if (env.JAVA_HOME) {
    const candidate = join(env.JAVA_HOME, "bin", "java");
    if (await isExecutable(candidate)) return candidate;
  }
  const onPath = await which("java", env.PATH);
  if (!onPath) throw new LocalStackError(JAVA_MISSING_MESSAGE);
  return onPath;
}

/** First executable named `name` in the PATH list, or undefined. */
export async function which(name: string, pathList: string | undefined): Promise<string | undefined> {
  for (const dir of (pathList ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

async function npmPack(spec: string, destDir: string, signal?: AbortSignal): Promise<string> {
  // --prefer-offline lets a second machine-wide fetch come from npm's own cache; the integrity check
  // below makes the source irrelevant to safety.
  await run(
    "npm",
    ["pack", spec, "--pack-destination", destDir, "--prefer-offline", "--silent", "--ignore-scripts"],
    signal,
  );
  const tarballs = (await readdir(destDir)).filter((f) => f.endsWith(".tgz"));
  const [tarball] = tarballs;
  if (tarballs.length !== 1 || tarball === undefined) {
    throw new LocalStackError(`npm pack ${spec} did not produce exactly one tarball in ${destDir}`);
  }
  return join(destDir, tarball);
}

function run(cmd: string, args: string[], signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"], signal });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d: string) => {
      // Only the tail matters for the error line; keep at most 4 KiB.
      stderr = (stderr + d).slice(-4096);
    });
    child.on("error", (err) => {
      const hint = (err as NodeJS.ErrnoException).code === "ENOENT" ? ` (${cmd} is not installed)` : "";
      reject(new LocalStackError(`${cmd} ${args.join(" ")} failed${hint}: ${err.message}`, { cause: err }));
    });
    child.on("close", (code) => {
      if (code === 0) resolve();
      else {
        const detail = stderr.trim().split("\n").slice(-3).join(" | ");
        reject(new LocalStackError(`${cmd} ${args[0] ?? ""} exited with ${code}: ${detail}`));
      }
    });
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    const s = await stat(path);
    if (!s.isFile()) return false;
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
