#!/usr/bin/env node
// Bundles every Lambda entry point in functions/handlers/ into dist/<name>/index.mjs and zips it into
// dist/<name>.zip, the artifacts serverless.yml deploys (`package.artifact`).
//
//   node scripts/build.mjs            # all handlers
//   node scripts/build.mjs api        # only the named handlers
import { createWriteStream } from "node:fs";
import { mkdir, readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import yazl from "yazl";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const handlersDir = path.join(root, "functions", "handlers");
const distDir = path.join(root, "dist");

// Bundles are ESM, but some dependencies are CommonJS and call require() for Node built-ins;
// ESM has no require, so give them one. Aliased so it cannot clash with a bundled import.
const banner =
  "import { createRequire as __hangarCreateRequire } from 'module'; const require = __hangarCreateRequire(import.meta.url);";

// A fixed timestamp makes the zip a pure function of the bundle, so an unchanged function keeps its
// code hash and is not redeployed.
const ZIP_MTIME = new Date("2000-01-01T00:00:00Z");

/** Entry points: `functions/handlers/<name>.ts`, excluding tests and declarations. */
export async function findHandlers(dir = handlersDir) {
  const entries = await readdir(dir, { withFileTypes: true }).catch((error) => {
    if (error.code === "ENOENT") return [];
    throw error;
  });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith(".ts") && !/\.(test|spec|d)\.ts$/.test(e.name))
    .map((e) => e.name.slice(0, -".ts".length))
    .sort();
}

function zipDirectory(files, zipPath) {
  return new Promise((resolve, reject) => {
    const zip = new yazl.ZipFile();
    for (const { realPath, name } of files) {
      zip.addFile(realPath, name, { mtime: ZIP_MTIME, mode: 0o100644 });
    }
    zip.outputStream.on("error", reject);
    zip.outputStream
      .pipe(createWriteStream(zipPath))
      .on("close", () => resolve())
      .on("error", reject);
    zip.end();
  });
}

/** Builds the named handlers (all when empty) and returns what was written. */
export async function buildHandlers(names = []) {
  const available = await findHandlers();
  const unknown = names.filter((n) => !available.includes(n));
  if (unknown.length > 0) {
    throw new Error(`no handler named ${unknown.join(", ")} in ${path.relative(root, handlersDir)}`);
  }
  const selected = names.length > 0 ? names : available;
  if (selected.length === 0) {
    throw new Error(`no handlers found in ${path.relative(root, handlersDir)}`);
  }

  await mkdir(distDir, { recursive: true });
  await Promise.all(
    selected.flatMap((name) => [
      rm(path.join(distDir, name), { recursive: true, force: true }),
      rm(path.join(distDir, `${name}.zip`), { force: true }),
    ]),
  );

  // One esbuild call; each entry point still gets its own self-contained bundle (no code splitting).
  const result = await build({
    absWorkingDir: root,
    entryPoints: Object.fromEntries(
      selected.map((name) => [`${name}/index`, path.join(handlersDir, `${name}.ts`)]),
    ),
    outdir: distDir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    target: "node22",
    format: "esm",
    minify: true,
    // Error and class names stay readable in logs (jose's errors, domain errors) despite minification.
    keepNames: true,
    sourcemap: true,
    // Source maps already point at the sources; the bundle does not need them inlined.
    sourcesContent: false,
    legalComments: "none",
    // Prefer a package's ESM entry, as Node does for `import`.
    mainFields: ["module", "main"],
    banner: { js: banner },
    metafile: true,
    logLevel: "warning",
  });
  if (result.errors.length > 0) throw new Error("esbuild reported errors");

  const built = [];
  for (const name of selected) {
    const dir = path.join(distDir, name);
    const files = (await readdir(dir)).sort().map((f) => ({ realPath: path.join(dir, f), name: f }));
    const zipPath = path.join(distDir, `${name}.zip`);
    await zipDirectory(files, zipPath);
    const { size } = await stat(zipPath);
    built.push({ name, zip: path.relative(root, zipPath), bytes: size });
  }
  return built;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const built = await buildHandlers(process.argv.slice(2));
    for (const { zip, bytes } of built) {
      console.log(`${zip}  ${(bytes / 1024).toFixed(0)} KiB`);
    }
  } catch (error) {
    console.error(`build failed: ${error instanceof Error ? error.message : error}`);
    process.exitCode = 1;
  }
}
