import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  BUDGETS,
  type BuiltBundle,
  buildBundles,
  duplicatePackages,
  initEnv,
  initInputs,
  initPackages,
  jsBytes,
  type Metafile,
  measureInit,
  packageOf,
  sizeFindings,
} from "../../bench/budgets.ts";

// Builds every Lambda bundle once (scripts/build.mjs, into a temporary directory) and holds each to its
// JavaScript budget and to one copy of every package. Module init times are `npm run bench`'s: too
// dependent on the machine's load for a test.
let outDir: string;
let bundles: BuiltBundle[];

beforeAll(() => {
  outDir = mkdtempSync(join(tmpdir(), "hangar-bundles-"));
  bundles = buildBundles(outDir);
}, 180_000);

afterAll(() => {
  if (outDir) rmSync(outDir, { recursive: true, force: true });
});

/** The names of the files a zip holds, from its central directory. */
function zipNames(zip: Buffer): string[] {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const names: string[] = [];
  let at = zip.readUInt32LE(eocd + 16);
  for (let i = zip.readUInt16LE(eocd + 10); i > 0; i--) {
    const nameLength = zip.readUInt16LE(at + 28);
    names.push(zip.toString("utf8", at + 46, at + 46 + nameLength));
    at += 46 + nameLength + zip.readUInt16LE(at + 30) + zip.readUInt16LE(at + 32);
  }
  return names;
}

/** A metafile of one bundle made of `inputs` (path → bytes in the output). */
function metafile(inputs: Record<string, number>, bytes = 1024): Metafile {
  return {
    inputs: Object.fromEntries(Object.keys(inputs).map((k) => [k, { bytes: 0 }])),
    outputs: {
      "dist/fn/index.mjs": {
        bytes,
        entryPoint: "functions/handlers/fn.ts",
        inputs: Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, { bytesInOutput: v }])),
      },
    },
  };
}

describe("bundle budgets", () => {
  it("builds the functions the budgets name, at least the api and the importer", () => {
    const names = bundles.map((b) => b.name);
    expect(names).toEqual(expect.arrayContaining(["api", "importer"]));
  });

  it("keeps every bundle's JavaScript within its budget", () => {
    // A budget whose function is no longer built is not checked; a function without one only reported.
    const over = bundles.flatMap((b) => sizeFindings(b));
    expect(over).toEqual([]);
    for (const b of bundles) {
      const budget = BUDGETS[b.name];
      if (budget) expect(jsBytes(b.metafile)).toBeLessThanOrEqual(budget.jsKiB * 1024);
    }
  });

  it("counts every JavaScript file of a function's folder, entry and chunks, and zips every one", () => {
    for (const b of bundles) {
      const dir = dirname(b.bundle);
      const js = readdirSync(dir).filter((f) => f.endsWith(".mjs"));
      const bytes = js.reduce((sum, f) => sum + statSync(join(dir, f)).size, 0);
      expect({ bundle: b.name, bytes: jsBytes(b.metafile) }).toEqual({ bundle: b.name, bytes });
      const zipped = zipNames(readFileSync(join(outDir, `${b.name}.zip`)));
      expect(zipped).toEqual(expect.arrayContaining([...js, ...js.map((f) => `${f}.map`)]));
    }
  });

  it("holds one copy of each package in every bundle", () => {
    const duplicates = bundles.flatMap((b) =>
      duplicatePackages(b.metafile).map((d) => ({ bundle: b.name, ...d })),
    );
    expect(duplicates).toEqual([]);
  });

  it("leaves the SDK's default credential chain out (Lambda's keys come from the environment)", () => {
    for (const b of bundles) {
      const chain = Object.keys(b.metafile.inputs).filter((k) =>
        /node_modules\/@aws-sdk\/(credential-provider-node|nested-clients)\//.test(k),
      );
      expect({ bundle: b.name, chain }).toEqual({ bundle: b.name, chain: [] });
    }
  });

  it("imports each bundle with its configuration, exporting a handler, without touching the network", () => {
    for (const b of bundles) {
      const init = measureInit(b.bundle, initEnv(b.name), 1);
      expect({ bundle: b.name, connects: init.connects }).toEqual({ bundle: b.name, connects: [] });
      // Node's fetch (its built-in undici, with http2 and worker_threads) is a fifth of the api's init;
      // no function needs it before its first event.
      expect({ bundle: b.name, undici: init.builtins.filter((m) => m.includes("undici")) }).toEqual({
        bundle: b.name,
        undici: [],
      });
    }
  }, 120_000);
});

/**
 * zod schemas and checks built while `load` runs, from zod's own hook (it hands every instance it constructs
 * to `globalThis.__zod_globalConfig.postProcessor`), as the init child of bench/budgets.ts counts them.
 */
async function zodInstancesBuilt(load: () => Promise<unknown>): Promise<number> {
  const g = globalThis as { __zod_globalConfig?: { postProcessor?: (inst: unknown) => void } };
  g.__zod_globalConfig ??= {};
  let n = 0;
  g.__zod_globalConfig.postProcessor = () => {
    n++;
  };
  try {
    await load();
    return n;
  } finally {
    delete g.__zod_globalConfig.postProcessor;
  }
}

describe("what init loads", () => {
  it("keeps S3's XML protocol and CRC32 checksums out of the api's and the importer's init, which the SDK's index modules reached", () => {
    const s3Only =
      /@aws-sdk\/core\/dist-es\/submodules\/protocols\/xml\/|@smithy\/core\/dist-es\/submodules\/checksum\/crc32\/|@aws-sdk\/xml-builder\//;
    const budgeted = bundles.filter((b) => b.name === "api" || b.name === "importer");
    expect(budgeted).toHaveLength(2);
    for (const b of budgeted) {
      const inputs = initInputs(b.metafile);
      // The item calls' signer is there (an empty walk cannot pass), and S3's bundles hold these files.
      expect(inputs.some((i) => i.endsWith("functions/adapters/aws/sigv4.ts"))).toBe(true);
      expect({ bundle: b.name, s3Only: inputs.filter((i) => s3Only.test(i)) }).toEqual({
        bundle: b.name,
        s3Only: [],
      });
    }
    const s3Files = bundles.flatMap((b) => Object.keys(b.metafile.inputs).filter((i) => s3Only.test(i)));
    expect(s3Files.length).toBeGreaterThan(0);
  });

  it("reads every function's configuration without building a zod schema", async () => {
    // The configuration is read by readers of its own (functions/config.ts): zod's schemas for it and
    // their first parse were a fifth of the JavaScript the api's init ran.
    const built = await zodInstancesBuilt(async () => {
      vi.resetModules();
      const config = await import("../../functions/config.ts");
      config.loadConfig({ ...initEnv("api"), ...initEnv("importer") });
    });
    expect(built).toBe(0);
  });

  it("builds no zod schema in the api's init, and only the S3 event schema in the importer's", async () => {
    // The configuration and the stored record are read without zod (functions/config.ts,
    // functions/adapters/dynamodb/image-item.ts); the catalogue, the request bodies, the token claims and
    // the schema documents are built when a request first needs them (docs/deploy.md). What the importer's
    // init cannot do without: the event schemas its module builds at load.
    const events = await zodInstancesBuilt(async () => {
      vi.resetModules();
      await import("../../functions/adapters/s3/events.ts");
    });
    expect(events).toBeGreaterThan(0);
    const built = Object.fromEntries(
      bundles
        .filter((b) => b.name === "api" || b.name === "importer")
        .map((b) => [b.name, measureInit(b.bundle, initEnv(b.name), 1).zodInstances]),
    );
    expect(built).toEqual({ api: 0, importer: events });
  }, 120_000);

  it("reads a stored record without zod: no function but those that parse requests or events bundles it", () => {
    const withZod = bundles
      .filter((b) => Object.keys(b.metafile.inputs).some((i) => packageOf(i)?.name === "zod"))
      .map((b) => b.name);
    // The api parses requests, the importer S3 events, web-download its job; the others read records only.
    expect(withZod).toEqual(["api", "importer", "web-download"]);
  });

  it("keeps the DynamoDB and S3 SDK clients and the web-download address checks out of the api's init, and the SDK clients out of the importer's", () => {
    const byName = new Map(bundles.map((b) => [b.name, initPackages(b.metafile)]));
    const api = byName.get("api") ?? [];
    const importer = byName.get("importer") ?? [];
    // What init does load, so an empty walk cannot pass: the api's router, the logger in both; the item
    // calls sign with Hangar's own signer (functions/adapters/aws/sigv4.ts), not the SDK's.
    expect(api).toEqual(expect.arrayContaining(["hono", "@aws-lambda-powertools/logger"]));
    expect(importer).toEqual(expect.arrayContaining(["@aws-lambda-powertools/logger"]));
    expect([...api, ...importer].filter((p) => p === "@smithy/signature-v4")).toEqual([]);
    const sdkClients = ["@aws-sdk/client-dynamodb", "@aws-sdk/client-s3"];
    expect(api.filter((p) => [...sdkClients, "ipaddr.js"].includes(p))).toEqual([]);
    expect(importer.filter((p) => sdkClients.includes(p))).toEqual([]);
  });
});

describe("bundle checks", () => {
  it("finds a package installed twice, by name, wherever it sits", () => {
    const two = metafile({
      "node_modules/@smithy/core/dist-es/index.js": 100,
      "node_modules/@smithy/core/dist-es/client.js": 100,
      "node_modules/@aws-sdk/client-s3/node_modules/@smithy/core/dist-es/index.js": 100,
      "node_modules/zod/v4/core/core.js": 10,
      "functions/config.ts": 10,
    });
    expect(duplicatePackages(two)).toEqual([
      {
        name: "@smithy/core",
        dirs: ["node_modules/@aws-sdk/client-s3/node_modules/@smithy/core", "node_modules/@smithy/core"],
      },
    ]);
    expect(packageOf("../main/node_modules/zod/v4/mini/schemas.js")).toEqual({
      name: "zod",
      dir: "../main/node_modules/zod",
    });
    expect(packageOf("functions/config.ts")).toBeUndefined();
  });

  it("weighs a bundle's entry and its chunks, not their source maps", () => {
    const m = metafile({ "functions/a.ts": 100 }, 1000);
    m.outputs["dist/fn/chunk-ABC.mjs"] = { bytes: 500, inputs: { "functions/b.ts": { bytesInOutput: 400 } } };
    m.outputs["dist/fn/chunk-ABC.mjs.map"] = { bytes: 9000, inputs: {} };
    m.outputs["dist/fn/index.mjs.map"] = { bytes: 9000, inputs: {} };
    expect(jsBytes(m)).toBe(1500);
  });

  it("reports a bundle over its budget, and only then", () => {
    const bundle = { name: "api", bundle: "", metafile: metafile({}, 801 * 1024) };
    expect(sizeFindings(bundle, { api: { jsKiB: 800 } })).toEqual([
      "api: 801.0 KiB of JavaScript, budget 800 KiB",
    ]);
    expect(sizeFindings(bundle, { api: { jsKiB: 801 } })).toEqual([]);
    expect(sizeFindings({ ...bundle, name: "sweeper" }, { api: { jsKiB: 1 } })).toEqual([]);
  });
});
