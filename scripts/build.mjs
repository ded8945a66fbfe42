#!/usr/bin/env node
// Bundles every Lambda entry point in functions/handlers/ into dist/<name>/index.mjs (with the chunks it
// imports later, chunk-*.mjs, beside it) and zips that folder into dist/<name>.zip, the artifacts
// serverless.yml deploys (`package.artifact`). Each bundle's esbuild metafile goes beside it,
// dist/<name>/metafile.json (not into the zip): what each package weighs, and what the bundle-budget
// test (test/unit/bundles.test.ts) and `npm run bench` read.
//
//   node scripts/build.mjs                    # all handlers
//   node scripts/build.mjs api                # only the named handlers
//   node scripts/build.mjs --outdir /tmp/x    # somewhere other than dist/
import { createWriteStream } from "node:fs";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
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

/**
 * The AWS SDK clients describe every operation of their service in one schemas module, as arrays like
 * `[9, n0, _GO, { [_h]: ["GET", "/{Key+}", 200] }, …]` whose keys are module constants (`const _h = "http"`).
 * esbuild must keep any statement with a computed key (a key's conversion to string could run code), so
 * all of them stay in every bundle, used or not: two thirds of S3's 67 KiB for the importer. Writing each
 * such key as the string literal it names is the same object, and lets esbuild drop what no command uses.
 * Only keys that are plain string constants of the same module are rewritten; anything else is left as is.
 */
export const sdkSchemaLiteralKeys = {
  name: "sdk-schema-literal-keys",
  setup(b) {
    b.onLoad(
      { filter: /[\\/]@aws-sdk[\\/][^\\/]+[\\/]dist-es[\\/](.+[\\/])?schemas[\\/]schemas_\d+\.js$/ },
      async (args) => {
        const source = await readFile(args.path, "utf8");
        const constants = new Map(
          [...source.matchAll(/^const (_\w+) = ("[^"\\\n]*");$/gm)].map((m) => [m[1], m[2]]),
        );
        const contents = source.replace(/\[(_\w+)\]:/g, (key, name) =>
          constants.has(name) ? `${constants.get(name)}:` : key,
        );
        return { contents, loader: "js" };
      },
    );
  },
};

/**
 * On Lambda the SDK's default credential chain always stops at its first link, the role's keys in the
 * environment; its other links load nested SDK clients (SSO, STS, sign-in) that were a sixth of every
 * bundle and most of the importer's module init. The bundles resolve `@aws-sdk/credential-provider-node`
 * to functions/adapters/aws/lambda-credentials.ts, which reads the environment only.
 */
export const lambdaCredentials = {
  name: "lambda-credentials",
  setup(b) {
    b.onResolve({ filter: /^@aws-sdk\/credential-provider-node$/ }, () => ({
      path: path.join(root, "functions", "adapters", "aws", "lambda-credentials.ts"),
    }));
  },
};

/**
 * Code splitting puts a module in the chunks of every entry whose imports reach it, whether or not that
 * entry uses what it exports. The SDK's packages import each other through index modules that re-export a
 * whole area (`@smithy/core/serde`, `@aws-sdk/core/protocols`): through them, the DynamoDB client of every
 * function's init "reaches" S3's XML protocol, checksums and streams, which only the S3 chunk uses, and
 * init loaded them (a tenth of the api's init, and `node:zlib`). Each named import from such an index is
 * written as imports from the modules that define the names, so a module is reached by the code that
 * uses it only. An import is left as it is when any of its names cannot be traced to a plain export.
 */
export const sdkDirectImports = {
  name: "sdk-direct-imports",
  setup(b) {
    const sdk = /[\\/]node_modules[\\/]@(aws-sdk|smithy)[\\/][^\\/]+[\\/]dist-es[\\/]/;
    const exportMaps = new Map();
    const resolved = new Map();
    const resolveFrom = (spec, file) => {
      const key = `${path.dirname(file)}\0${spec}`;
      if (!resolved.has(key)) {
        resolved.set(
          key,
          b
            .resolve(spec, { kind: "import-statement", resolveDir: path.dirname(file) })
            .then((r) => (r.errors.length > 0 || r.external || !sdk.test(r.path) ? undefined : r.path)),
        );
      }
      return resolved.get(key);
    };
    /** Name exported by `file` → where it is defined ({ file, name }); undefined for a file it cannot read. */
    const exportMap = (file) => {
      if (!exportMaps.has(file)) exportMaps.set(file, readExports(file));
      return exportMaps.get(file);
    };
    async function readExports(file) {
      const source = await readFile(file, "utf8");
      const out = new Map();
      for (const m of source.matchAll(
        /^export (?:const|let|var|function\*?|async function|class) ([\w$]+)/gm,
      )) {
        out.set(m[1], { file, name: m[1] });
      }
      for (const m of source.matchAll(/^export \{([^}]*)\} from "([^"]+)";$/gm)) {
        const target = await resolveFrom(m[2], file);
        const names = target && (await exportMap(target));
        if (!names) return undefined;
        for (const spec of m[1]
          .split(",")
          .map((x) => x.trim())
          .filter(Boolean)) {
          const [from, as = from] = spec.split(/\s+as\s+/);
          const def = names.get(from);
          if (!def) return undefined;
          out.set(as, def);
        }
      }
      for (const m of source.matchAll(/^export \* from "([^"]+)";$/gm)) {
        const target = await resolveFrom(m[1], file);
        const names = target && (await exportMap(target));
        if (!names) return undefined;
        for (const [k, v] of names) if (!out.has(k) && k !== "default") out.set(k, v);
      }
      // Any other export form (local lists, defaults): the file is only trusted for what was read above.
      return out;
    }
    b.onLoad(
      { filter: /[\\/]node_modules[\\/]@(aws-sdk|smithy)[\\/][^\\/]+[\\/]dist-es[\\/].*\.js$/ },
      async (args) => {
        const original = await readFile(args.path, "utf8");
        let source = original;
        // The index modules that matter are other packages' (`@smithy/core/serde`): a relative import is
        // left alone, which spares most of the resolving (each a round trip to esbuild).
        const imports = [...source.matchAll(/^import \{([^}]*)\} from "(@(?:aws-sdk|smithy)\/[^"]+)";$/gm)];
        for (const m of imports) {
          const target = await resolveFrom(m[2], args.path);
          if (!target || !/[\\/]index\.js$/.test(target)) continue;
          const names = await exportMap(target);
          if (!names) continue;
          const specs = m[1]
            .split(",")
            .map((x) => x.trim())
            .filter(Boolean);
          const direct = specs.map((spec) => {
            const [from, as = from] = spec.split(/\s+as\s+/);
            const def = names.get(from);
            return def && { line: `import { ${def.name} as ${as} } from ${JSON.stringify(def.file)};` };
          });
          if (direct.some((d) => !d)) continue;
          source = source.replace(m[0], direct.map((d) => d.line).join("\n"));
        }
        // Unchanged files are left to esbuild to read.
        return source === original ? undefined : { contents: source, loader: "js" };
      },
    );
  },
};

/** Written beside each bundle for analysis; never deployed. */
export const METAFILE = "metafile.json";

/** The browser page (web/), built into the api function's folder and served by it at `GET /ui/`. */
export const PAGE_DIR = "ui";
const webDir = path.join(root, "web");

/**
 * Builds the browser page into `dir`: `index.html`, `app.js` and `app.css` (Uppy's styles with ours).
 * A bundle of its own for the browser, never part of the function's JavaScript: the api function reads
 * these files from its folder when the page is asked for. The importer's format inspector is bundled
 * unchanged; its one Node import, `node:zlib`, resolves to a DecompressionStream stand-in.
 */
export async function buildPage(dir) {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const result = await build({
    absWorkingDir: root,
    entryPoints: { app: path.join(webDir, "src", "main.ts") },
    outdir: dir,
    bundle: true,
    platform: "browser",
    target: ["chrome111", "firefox111", "safari16.4"],
    format: "esm",
    minify: true,
    legalComments: "none",
    alias: { "node:zlib": path.join(webDir, "src", "zlib-browser.ts") },
    metafile: true,
    logLevel: "warning",
  });
  if (result.errors.length > 0) throw new Error("esbuild reported errors building the page");
  await writeFile(path.join(dir, "index.html"), await readFile(path.join(webDir, "index.html")));
  return result.metafile;
}

/** Every file under `dir`, as zip entries named by their path relative to it. */
async function listFiles(dir, prefix = "") {
  const out = [];
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) =>
    a.name.localeCompare(b.name),
  )) {
    const realPath = path.join(dir, entry.name);
    const name = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await listFiles(realPath, name)));
    else if (entry.isFile()) out.push({ realPath, name });
  }
  return out;
}

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

/**
 * Builds the named handlers (all when empty) into `outDir` (dist/ by default) and returns what was
 * written: per handler its zip and bytes, the bundle's JavaScript bytes, and its metafile.
 */
export async function buildHandlers(names = [], { outDir = distDir } = {}) {
  const available = await findHandlers();
  const unknown = names.filter((n) => !available.includes(n));
  if (unknown.length > 0) {
    throw new Error(`no handler named ${unknown.join(", ")} in ${path.relative(root, handlersDir)}`);
  }
  const selected = names.length > 0 ? names : available;
  if (selected.length === 0) {
    throw new Error(`no handlers found in ${path.relative(root, handlersDir)}`);
  }

  await mkdir(outDir, { recursive: true });
  await Promise.all(
    selected.flatMap((name) => [
      rm(path.join(outDir, name), { recursive: true, force: true }),
      rm(path.join(outDir, `${name}.zip`), { force: true }),
    ]),
  );

  // One esbuild build per function, into its own folder: `index.mjs`, and the chunks of the modules its
  // code imports only when first used (`import()`, functions/roots/lazy.ts), which its init does not
  // load. The folder is the function: nothing is shared with another function's.
  const results = await Promise.all(
    selected.map((name) =>
      build({
        absWorkingDir: root,
        entryPoints: { index: path.join(handlersDir, `${name}.ts`) },
        outdir: path.join(outDir, name),
        outExtension: { ".js": ".mjs" },
        bundle: true,
        splitting: true,
        chunkNames: "chunk-[hash]",
        platform: "node",
        target: "node22",
        format: "esm",
        minify: true,
        // No keepNames: its defineProperty call per function and class was a tenth of the api's module init.
        // Hangar's error classes name themselves (`override name = …`), and logged or thrown stack traces are
        // mapped back to the sources from the maps beside the bundle (functions/adapters/stack-map.ts); only
        // library classes that take their name from the constructor (jose's errors) log a minified one.
        keepNames: false,
        sourcemap: true,
        // Source maps already point at the sources; the bundle does not need them inlined.
        sourcesContent: false,
        legalComments: "none",
        // Prefer a package's ESM entry, as Node does for `import`.
        mainFields: ["module", "main"],
        // In every chunk: each is a module of its own.
        banner: { js: banner },
        plugins: [sdkSchemaLiteralKeys, lambdaCredentials, sdkDirectImports],
        metafile: true,
        logLevel: "warning",
      }),
    ),
  );
  if (results.some((r) => r.errors.length > 0)) throw new Error("esbuild reported errors");

  const built = [];
  for (const [i, name] of selected.entries()) {
    const { metafile } = results[i];
    const dir = path.join(outDir, name);
    const bundle = path.join(dir, "index.mjs");
    const outputs = Object.entries(metafile.outputs).map(([key, o]) => ({
      file: path.resolve(root, key),
      ...o,
    }));
    if (!outputs.some((o) => o.file === bundle))
      throw new Error(`esbuild's metafile has no output ${bundle}`);
    if (name === "api") await buildPage(path.join(dir, PAGE_DIR));
    const files = (await listFiles(dir)).filter((f) => f.name !== METAFILE);
    const zipPath = path.join(outDir, `${name}.zip`);
    await zipDirectory(files, zipPath);
    const metafilePath = path.join(dir, METAFILE);
    await writeFile(metafilePath, JSON.stringify(metafile));
    const { size } = await stat(zipPath);
    built.push({
      name,
      zip: path.relative(root, zipPath),
      bytes: size,
      bundle,
      // The entry and every chunk: all of it is the function's code, loaded at init or later.
      jsBytes: outputs.filter((o) => o.file.endsWith(".mjs")).reduce((sum, o) => sum + o.bytes, 0),
      metafile: metafilePath,
    });
  }
  return built;
}

/** `[--outdir DIR] [name...]` */
function parseArgs(args) {
  const names = [];
  let outDir;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--outdir") {
      outDir = args[++i];
      if (!outDir) throw new Error("--outdir needs a directory");
    } else if (arg.startsWith("--outdir=")) outDir = arg.slice("--outdir=".length);
    else if (arg.startsWith("-")) throw new Error(`unknown option ${arg}`);
    else names.push(arg);
  }
  return { names, outDir: outDir ? path.resolve(outDir) : undefined };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const { names, outDir } = parseArgs(process.argv.slice(2));
    const built = await buildHandlers(names, { outDir });
    const kib = (n) => `${(n / 1024).toFixed(0)} KiB`.padStart(8);
    for (const { zip, bytes, jsBytes } of built) {
      console.log(`${zip.padEnd(24)} zip ${kib(bytes)}   JavaScript ${kib(jsBytes)}`);
    }
  } catch (error) {
    console.error(`build failed: ${error instanceof Error ? error.message : error}`);
    process.exitCode = 1;
  }
}
