import { execFile, execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { appendFile, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { inflateRawSync } from "node:zlib";
import { exportJWK, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tableDefinition } from "../../functions/adapters/dynamodb/table.ts";
import { loadConfig } from "../../functions/config.ts";
import { publicJwk, type SignOptions, signToken, type TokenClaims } from "../../infra/local/tokens.ts";
import { httpApiEvent, invokeBundle as invoke, seen } from "../built-bundle.ts";

// Packages serverless.yml with osls, offline, in a copy of the working tree that has no dist/ of its
// own (as in a fresh clone), so the bundles are the ones osls's build plugin makes from the current
// source. It then checks the CloudFormation that `osls deploy` would submit: what triggers the
// importer, what each role may touch, and how the bucket and table are set up. It also loads every
// packaged bundle under plain Node, as Lambda does, and runs the API's against signed tokens in API
// Gateway's payload-2.0 events.

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** Handler files (`functions/handlers/<file>.ts`), each bundled to `dist/<file>.zip` and deployed as a function. */
const HANDLERS = readdirSync(path.join(root, "functions/handlers"))
  .filter((f) => f.endsWith(".ts") && !/\.(test|spec|d)\.ts$/.test(f))
  .map((f) => f.slice(0, -".ts".length))
  .sort();
// serverless.yml keys functions in camelCase (osls would turn "-" into "Dash" in logical ids).
const pascal = (file: string) => file.replace(/(^|-)([a-z])/g, (_, __, c: string) => c.toUpperCase());
const functionId = (file: string) => `${pascal(file)}LambdaFunction`;
const roleId = (file: string) => `${pascal(file)}Role`;
// Tests that start Node on a bundle; generous because the unit tier shares two cores.
const SPAWN_TIMEOUT = 30_000;

// Stand-ins for CloudFormation pseudo parameters when resolving Fn::Sub in assertions.
const ACCOUNT = "123456789012";
const REGION = "us-east-1";
const STAGE = "test";
const BUCKET = `hangar-${STAGE}-${ACCOUNT}-${REGION}`;
const BUCKET_ARN = `arn:aws:s3:::${BUCKET}`;
/** The functions the fan-out state machine invokes (infra/cloudformation/fanout.yml), by placeholder. */
const FANOUT_FUNCTIONS = {
  FanoutControlFunctionArn: "fanoutControl",
  FanoutHashFunctionArn: "fanoutHash",
  FanoutWorkerFunctionArn: "fanoutWorker",
};
const FANOUT_FUNCTION_ARNS = Object.values(FANOUT_FUNCTIONS).map(
  (f) => `arn:aws:lambda:${REGION}:${ACCOUNT}:function:hangar-${STAGE}-${f}`,
);

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Resource = { Type: string; Properties?: Record<string, Json>; DependsOn?: string | string[] };
type Template = { Resources: Record<string, Resource>; Outputs?: Record<string, Json> };
type Statement = { Effect: string; Action: string | string[]; Resource: Json; Condition?: Json };

/**
 * Environment for osls: no AWS account to reach and no way out. Dummy static credentials keep the SDK
 * from probing instance metadata; a dead loopback proxy makes any outbound call fail instead of leaving.
 */
function offlineEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) {
    if (/^(AWS_|HANGAR_|SLS_|SERVERLESS_)/.test(key) || /^(https?|no|all)_proxy$/i.test(key)) delete env[key];
  }
  const deadProxy = "http://127.0.0.1:9";
  return {
    ...env,
    AWS_ACCESS_KEY_ID: "AKIAHANGAROFFLINE000",
    AWS_SECRET_ACCESS_KEY: "offline-packaging-only",
    AWS_SHARED_CREDENTIALS_FILE: path.join(home, "aws-credentials"),
    AWS_CONFIG_FILE: path.join(home, "aws-config"),
    AWS_EC2_METADATA_DISABLED: "true",
    HTTP_PROXY: deadProxy,
    HTTPS_PROXY: deadProxy,
    http_proxy: deadProxy,
    https_proxy: deadProxy,
    npm_config_update_notifier: "false",
  };
}

/** Resolves the intrinsics this template uses into comparable strings (`arn-of:<LogicalId>` for Arn). */
function resolve(value: Json | undefined): string {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const sub = value["Fn::Sub"];
    if (typeof sub === "string") {
      return sub.replace(/\$\{([^}]+)\}/g, (_, name: string) => {
        if (name === "AWS::Partition") return "aws";
        if (name === "AWS::AccountId") return ACCOUNT;
        if (name === "AWS::Region") return REGION;
        if (name.endsWith(".Arn")) return `arn-of:${name.slice(0, -".Arn".length)}`;
        throw new Error(`unexpected substitution \${${name}}`);
      });
    }
    const getAtt = value["Fn::GetAtt"];
    if (Array.isArray(getAtt) && getAtt[1] === "Arn") return `arn-of:${getAtt[0]}`;
    const ref = value.Ref;
    if (typeof ref === "string") return `ref:${ref}`;
  }
  throw new Error(`cannot resolve ${JSON.stringify(value)}`);
}

const asList = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** The files of a zip (stored or deflated), from its central directory: what a Lambda artifact holds. */
function unzip(zip: Buffer): Map<string, Buffer> {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (eocd < 0) throw new Error("not a zip file");
  const count = zip.readUInt16LE(eocd + 10);
  let at = zip.readUInt32LE(eocd + 16);
  const files = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    if (zip.readUInt32LE(at) !== 0x02014b50) throw new Error("corrupt central directory");
    const method = zip.readUInt16LE(at + 10);
    const compressedSize = zip.readUInt32LE(at + 20);
    const nameLength = zip.readUInt16LE(at + 28);
    const local = zip.readUInt32LE(at + 42);
    const name = zip.toString("utf8", at + 46, at + 46 + nameLength);
    if (zip.readUInt32LE(local) !== 0x04034b50) throw new Error(`corrupt local header for ${name}`);
    const start = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
    const data = zip.subarray(start, start + compressedSize);
    if (method !== 0 && method !== 8) throw new Error(`${name}: unsupported compression ${method}`);
    files.set(name, method === 8 ? inflateRawSync(data) : Buffer.from(data));
    at += 46 + nameLength + zip.readUInt16LE(at + 30) + zip.readUInt16LE(at + 32);
  }
  return files;
}

let workDir: string;
/** The copy of the working tree that was packaged; its dist/ is what the build plugin made. */
let tree: string;
let template: Template;
/** What osls recorded as each function's artifact (serverless-state.json), by function key. */
let artifacts: Record<string, string>;
let resources: Record<string, Resource>;

const ofType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);
const props = (id: string): Record<string, Json> => {
  const r = resources[id];
  if (!r?.Properties) throw new Error(`no resource ${id} with properties`);
  return r.Properties;
};

// A line appended to the copy's API handler, unique to this run: a bundle holding it was built from
// the source as packaged, not taken from an earlier build.
const PROBE = `hangar-package-probe-${process.pid}-${Date.now()}`;

/** Copies the working tree's files that git knows or would add (no dist/, .serverless/, node_modules/). */
async function copyWorkingTree(to: string): Promise<void> {
  const { stdout } = await run("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], {
    cwd: root,
    maxBuffer: 16 * 1024 * 1024,
  });
  for (const file of new Set(stdout.split("\0").filter(Boolean))) {
    const from = path.join(root, file);
    if (!existsSync(from)) continue; // deleted, not yet committed
    await mkdir(path.dirname(path.join(to, file)), { recursive: true });
    await copyFile(from, path.join(to, file));
  }
  await symlink(path.join(root, "node_modules"), path.join(to, "node_modules"), "dir");
}

beforeAll(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), "hangar-package-"));
  tree = path.join(workDir, "tree");
  await copyWorkingTree(tree);
  await appendFile(
    path.join(tree, "functions/handlers/api.ts"),
    `\nexport const packageProbe = "${PROBE}";\n`,
  );
  // A stale build lying around, as after building an older commit: packaging must replace it.
  await mkdir(path.join(tree, "dist"), { recursive: true });
  await copyFile(path.join(tree, "package.json"), path.join(tree, "dist/api.zip"));
  const out = path.join(workDir, "package");
  await run(
    "npx",
    ["--no", "--", "osls", "package", "--stage", STAGE, "--region", REGION, "--package", out],
    { cwd: tree, env: offlineEnv(workDir), timeout: 120_000 },
  );
  template = JSON.parse(await readFile(path.join(out, "cloudformation-template-update-stack.json"), "utf8"));
  resources = template.Resources;
  const state = JSON.parse(await readFile(path.join(out, "serverless-state.json"), "utf8")) as {
    service: { functions: Record<string, { package?: { artifact?: string } }> };
  };
  artifacts = Object.fromEntries(
    Object.entries(state.service.functions).map(([name, f]) => [name, f.package?.artifact ?? ""]),
  );
}, 180_000);

afterAll(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

describe("packaged artifacts", () => {
  const camel = (file: string) => file.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

  it.each(HANDLERS)(
    "%s: dist/<name>.zip, holding the bundle and its source map at the root",
    async (name) => {
      expect(artifacts[camel(name)]).toBe(`dist/${name}.zip`);
      const files = unzip(await readFile(path.join(tree, "dist", `${name}.zip`)));
      // The api function also serves the browser page (/ui/) from the files beside its bundle.
      const page = name === "api" ? ["ui/app.css", "ui/app.js", "ui/index.html"] : [];
      // And the chunks the bundle imports when first used (scripts/build.mjs), with their maps.
      const chunks = (await readdir(path.join(tree, "dist", name))).filter((f) =>
        /^chunk-\w+\.mjs(\.map)?$/.test(f),
      );
      expect([...files.keys()].sort()).toEqual(["index.mjs", "index.mjs.map", ...chunks, ...page].sort());
    },
  );

  it("were built from the source as packaged (osls package runs the build), not an earlier build", async () => {
    const files = unzip(await readFile(path.join(tree, artifacts.api ?? "")));
    expect(files.get("index.mjs")?.toString()).toContain(PROBE);
    // And the bundle built from the repository's own source does not have it: the probe is this run's.
    expect(await readFile(path.join(root, "functions/handlers/api.ts"), "utf8")).not.toContain(PROBE);
  });
});

describe("bundles under Node", () => {
  // Lambda imports index.mjs as plain ESM: CommonJS dependencies must find `require` (the build's
  // banner) and module initialisation must not need the network.
  it.each(HANDLERS)(
    "dist/%s/index.mjs loads and exports a handler",
    async (name) => {
      const url = pathToFileURL(path.join(tree, "dist", name, "index.mjs")).href;
      const script = `const m = await import(${JSON.stringify(url)}); process.stdout.write(typeof m.handler);`;
      const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], {
        env: {
          PATH: process.env.PATH ?? "",
          AWS_REGION: REGION,
          AWS_ACCESS_KEY_ID: "AKIAHANGAROFFLINE000",
          AWS_SECRET_ACCESS_KEY: "offline-packaging-only",
          HANGAR_TABLE: "hangar-test",
          HANGAR_BUCKET: BUCKET,
          HANGAR_JWT_ISSUER: "https://issuer.test/",
          HANGAR_JWT_JWKS_URL: "http://127.0.0.1:9/jwks.json",
        },
        timeout: SPAWN_TIMEOUT,
      });
      expect(stdout).toBe("function");
    },
    SPAWN_TIMEOUT,
  );
});

describe("functions", () => {
  it("are one per handler in functions/handlers, each deploying its own artifact", () => {
    expect(HANDLERS).toEqual(expect.arrayContaining(["api", "importer"]));
    // The API function verifies tokens itself (docs/decisions/0001-authorizer.md).
    expect(HANDLERS).not.toContain("authorizer");
    const fns = ofType("AWS::Lambda::Function");
    expect(fns.map(([id]) => id).sort()).toEqual(HANDLERS.map(functionId).sort());
    for (const name of HANDLERS) {
      const p = props(functionId(name));
      expect(resolve((p.Code as Record<string, Json>).S3Key)).toMatch(new RegExp(`/${name}\\.zip$`));
      expect(p.Handler).toBe("index.handler");
    }
  });

  it.each(HANDLERS)("%s runs on nodejs22.x, arm64, with its own role", (name) => {
    const p = props(functionId(name));
    expect(p.Runtime).toBe("nodejs22.x");
    expect(p.Architectures).toEqual(["arm64"]);
    expect(resolve(p.Role)).toBe(`arn-of:${roleId(name)}`);
  });

  it("no shared execution role is generated", () => {
    expect(resources.IamRoleLambdaExecution).toBeUndefined();
    const roles = HANDLERS.map((n) => resolve(props(functionId(n)).Role));
    expect(new Set(roles).size).toBe(HANDLERS.length);
  });

  it.each(HANDLERS)("%s gets an environment that functions/config.ts accepts", (name) => {
    const vars = (props(functionId(name)).Environment as { Variables: Record<string, Json> }).Variables;
    const env = Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, resolve(v)]));
    const config = loadConfig(env);
    expect(config.bucket).toBe(BUCKET);
    expect(config.table).toBe(resolve(props("ImagesTable").TableName));
    expect(config.jwt.jwksUrl).toBeDefined();
  });

  it("the importer has room to convert and a failure destination", () => {
    const p = props("ImporterLambdaFunction");
    expect(p.MemorySize).toBeGreaterThanOrEqual(3008);
    expect(p.Timeout).toBe(900);
    const invokeConfigs = ofType("AWS::Lambda::EventInvokeConfig").filter(
      ([, r]) => resolve(r.Properties?.FunctionName) === "ref:ImporterLambdaFunction",
    );
    expect(invokeConfigs).toHaveLength(1);
    const [configId = ""] = invokeConfigs[0] ?? [];
    const destination = (props(configId).DestinationConfig as Record<string, Record<string, Json>>).OnFailure;
    expect(resolve(destination?.Destination)).toBe("arn-of:FailureQueue");
    expect(resources.FailureQueue?.Type).toBe("AWS::SQS::Queue");
  });
});

describe("what triggers the importer", () => {
  const referencesImporter = (v: Json | undefined) =>
    JSON.stringify(v ?? null).includes("ImporterLambdaFunction");

  it("is s3:ObjectCreated:* under staging/ on the image bucket, and nothing else", () => {
    const buckets = ofType("AWS::S3::Bucket").filter(([, r]) => r.Properties?.NotificationConfiguration);
    expect(buckets.map(([id]) => id)).toEqual(["ImagesBucket"]);
    const notification = props("ImagesBucket").NotificationConfiguration as Record<string, Json>;
    expect(Object.keys(notification)).toEqual(["LambdaConfigurations"]);
    expect(notification.LambdaConfigurations).toEqual([
      {
        Event: "s3:ObjectCreated:*",
        Filter: { S3Key: { Rules: [{ Name: "prefix", Value: "staging/" }] } },
        Function: { "Fn::GetAtt": ["ImporterLambdaFunction", "Arn"] },
      },
    ]);
  });

  it("only S3, from the image bucket of this account, may invoke it", () => {
    const permissions = ofType("AWS::Lambda::Permission").filter(([, r]) =>
      referencesImporter(r.Properties?.FunctionName),
    );
    expect(permissions).toHaveLength(1);
    const [id, permission] = permissions[0] ?? [];
    expect(permission?.Properties?.Principal).toBe("s3.amazonaws.com");
    expect(resolve(permission?.Properties?.SourceArn)).toBe(BUCKET_ARN);
    expect(resolve(permission?.Properties?.SourceAccount)).toBe("ref:AWS::AccountId");
    // S3 validates the destination when the notification is written.
    expect(asList(resources.ImagesBucket?.DependsOn)).toContain(id);
  });

  it("has no event source mapping, rule or API integration", () => {
    for (const type of [
      "AWS::Lambda::EventSourceMapping",
      "AWS::Events::Rule",
      "AWS::ApiGatewayV2::Integration",
      "AWS::SNS::Subscription",
    ]) {
      for (const [id, r] of ofType(type)) {
        expect(referencesImporter(r.Properties), `${id} targets the importer`).toBe(false);
      }
    }
  });
});

const statementsOf = (roleId: string): Statement[] =>
  (props(roleId).Policies as { PolicyDocument: { Statement: Statement[] } }[]).flatMap(
    (p) => p.PolicyDocument.Statement,
  );
const logGroups = () => new Set(ofType("AWS::Logs::LogGroup").map(([id]) => `arn-of:${id}`));
const allowed = (roleId: string, action: string, resource: string) =>
  statementsOf(roleId).some(
    (s) =>
      s.Effect === "Allow" &&
      asList(s.Action).includes(action) &&
      asList(s.Resource).some((r) => resolve(r) === resource),
  );

describe("IAM", () => {
  it("defines roles and policies only inline, one role per function and one for the state machine", () => {
    expect(ofType("AWS::IAM::Policy")).toEqual([]);
    expect(ofType("AWS::IAM::ManagedPolicy")).toEqual([]);
    expect(
      ofType("AWS::IAM::Role")
        .map(([id]) => id)
        .sort(),
    ).toEqual([...HANDLERS.map(roleId), "FanoutStateMachineRole"].sort());
    for (const [id] of ofType("AWS::IAM::Role")) {
      expect(props(id).ManagedPolicyArns, id).toBeUndefined();
    }
  });

  it("scopes every statement to the table and its indexes, the bucket's prefixes, the queue or a log group", () => {
    const scoped = new Set([
      "arn-of:ImagesTable",
      "arn-of:ImagesTable/index/*",
      BUCKET_ARN,
      `${BUCKET_ARN}/staging/*`,
      `${BUCKET_ARN}/images/*`,
      `${BUCKET_ARN}/spool/*`,
      // Objects of zeros that parts of zeros are copied from.
      `${BUCKET_ARN}/zeros/*`,
      "arn-of:FailureQueue",
      // The API starts web-download jobs by invoking that function, and the sweeper's re-drive the
      // importer; no other function is invoked.
      "arn-of:WebDownloadLambdaFunction",
      "arn-of:ImporterLambdaFunction",
      // Lifecycle events go to Hangar's own bus.
      "arn-of:EventBus",
      // The fan-out state machine invokes its functions, by name; the importer starts it.
      ...FANOUT_FUNCTION_ARNS,
      "ref:FanoutStateMachine",
      ...logGroups(),
    ]);
    for (const [roleId] of ofType("AWS::IAM::Role")) {
      for (const statement of statementsOf(roleId)) {
        expect(statement.Effect).toBe("Allow");
        for (const action of asList(statement.Action)) {
          expect(action, `${roleId} grants a wildcard action`).toMatch(/^[a-z0-9]+:[A-Za-z]+$/);
        }
        for (const resource of asList(statement.Resource)) {
          expect(scoped, `${roleId}: ${JSON.stringify(resource)}`).toContain(resolve(resource));
        }
      }
    }
  });

  it("lets every function publish lifecycle events to Hangar's bus, and to no other", () => {
    expect(ofType("AWS::Events::EventBus").map(([id]) => id)).toEqual(["EventBus"]);
    for (const name of HANDLERS) {
      const role = roleId(name);
      expect(allowed(role, "events:PutEvents", "arn-of:EventBus"), role).toBe(true);
      const busResources = statementsOf(role)
        .filter((s) => asList(s.Action).some((a) => a.startsWith("events:")))
        .flatMap((s) => asList(s.Resource).map(resolve));
      expect(busResources, role).toEqual(["arn-of:EventBus"]);
    }
  });

  it("lets each function write only its own log group", () => {
    for (const name of HANDLERS) {
      const role = roleId(name);
      const logResources = statementsOf(role)
        .filter((s) => asList(s.Action).some((a) => a.startsWith("logs:")))
        .flatMap((s) => asList(s.Resource).map(resolve));
      expect(logResources).toEqual([`arn-of:${pascal(name)}LogGroup`]);
    }
  });

  it("lets the API sign uploads to staging/ but never write images/", () => {
    expect(allowed("ApiRole", "s3:PutObject", `${BUCKET_ARN}/staging/*`)).toBe(true);
    expect(allowed("ApiRole", "s3:PutObject", `${BUCKET_ARN}/images/*`)).toBe(false);
    expect(allowed("ApiRole", "s3:GetObject", `${BUCKET_ARN}/images/*`)).toBe(true);
    expect(allowed("ApiRole", "dynamodb:Query", "arn-of:ImagesTable/index/*")).toBe(true);
  });

  it("lets only the API and web-download put objects under staging/, where every write imports", () => {
    const writers = ofType("AWS::IAM::Role")
      .map(([id]) => id)
      .filter((id) => allowed(id, "s3:PutObject", `${BUCKET_ARN}/staging/*`));
    expect(["ApiRole", "WebDownloadRole"]).toEqual(expect.arrayContaining(writers));
  });

  it("never lets the importer write under staging/ (its writes would trigger it again)", () => {
    for (const action of ["s3:PutObject", "s3:AbortMultipartUpload"]) {
      expect(allowed("ImporterRole", action, `${BUCKET_ARN}/staging/*`)).toBe(false);
      expect(allowed("ImporterRole", action, `${BUCKET_ARN}/images/*`)).toBe(true);
      // Its spool for gzip-wrapped images stored out of order lies outside staging/.
      expect(allowed("ImporterRole", action, `${BUCKET_ARN}/spool/*`)).toBe(true);
    }
    expect(allowed("ImporterRole", "s3:GetObject", `${BUCKET_ARN}/staging/*`)).toBe(true);
    expect(allowed("ImporterRole", "sqs:SendMessage", "arn-of:FailureQueue")).toBe(true);
    expect(allowed("ImporterRole", "dynamodb:ConditionCheckItem", "arn-of:ImagesTable")).toBe(true);
  });
});

describe("fan-out state machine", () => {
  it("is a Standard workflow whose definition is infra/stepfunctions/fanout.asl.json", async () => {
    expect(ofType("AWS::StepFunctions::StateMachine").map(([id]) => id)).toEqual(["FanoutStateMachine"]);
    const p = props("FanoutStateMachine");
    expect(p.StateMachineType).toBe("STANDARD");
    expect(p.StateMachineName).toBe(`hangar-${STAGE}-fanout`);
    // Packaged as the file's very text: no placeholder resolved by osls, no null dropped.
    const file = await readFile(path.join(root, "infra/stepfunctions/fanout.asl.json"), "utf8");
    expect(p.DefinitionString).toBe(file);
    expect(file).toContain('"ResultPath": null');
  });

  it("fills every placeholder of the definition with a fan-out function's ARN", () => {
    const p = props("FanoutStateMachine");
    const placeholders = [...String(p.DefinitionString).matchAll(/\$\{(\w+)\}/g)].map((m) => m[1]);
    const subs = p.DefinitionSubstitutions as Record<string, Json>;
    expect(Object.keys(subs).sort()).toEqual([...new Set(placeholders)].sort());
    expect(Object.fromEntries(Object.entries(subs).map(([k, v]) => [k, resolve(v)]))).toEqual(
      Object.fromEntries(
        Object.entries(FANOUT_FUNCTIONS).map(([k, f]) => [
          k,
          `arn:aws:lambda:${REGION}:${ACCOUNT}:function:hangar-${STAGE}-${f}`,
        ]),
      ),
    );
  });

  it("runs with a role of its own, assumed by Step Functions only, that may only invoke those functions", () => {
    expect(resolve(props("FanoutStateMachine").RoleArn)).toBe("arn-of:FanoutStateMachineRole");
    const role = props("FanoutStateMachineRole");
    const trust = (role.AssumeRolePolicyDocument as { Statement: Statement[] }).Statement;
    expect(trust.map((s) => [s.Effect, s.Action, (s as unknown as { Principal: Json }).Principal])).toEqual([
      ["Allow", "sts:AssumeRole", { Service: "states.amazonaws.com" }],
    ]);
    const statements = (role.Policies as { PolicyDocument: { Statement: Statement[] } }[]).flatMap(
      (x) => x.PolicyDocument.Statement,
    );
    expect(statements.map((s) => [s.Effect, asList(s.Action)])).toEqual([
      ["Allow", ["lambda:InvokeFunction"]],
    ]);
    expect(statements.flatMap((s) => asList(s.Resource).map(resolve)).sort()).toEqual(
      [...FANOUT_FUNCTION_ARNS].sort(),
    );
  });
});

describe("fan-out functions", () => {
  const fanoutFns = Object.values(FANOUT_FUNCTIONS);
  const fileOf = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

  it("are the three functions the definition names, each its own handler, role and artifact", () => {
    for (const key of fanoutFns) {
      expect(HANDLERS).toContain(fileOf(key));
      const p = props(functionId(fileOf(key)));
      expect(resolve(p.FunctionName)).toBe(`hangar-${STAGE}-${key}`);
    }
  });

  it("have the time and memory their states allow: workers and hash links 900 s, control inside 300 s", () => {
    const timeout = (key: string) => props(functionId(fileOf(key))).Timeout;
    const memory = (key: string) => Number(props(functionId(fileOf(key))).MemorySize);
    expect(timeout("fanoutWorker")).toBe(900);
    expect(timeout("fanoutHash")).toBe(900);
    expect(timeout("fanoutControl")).toBeLessThanOrEqual(300);
    expect(memory("fanoutWorker")).toBeGreaterThanOrEqual(3008);
    expect(memory("fanoutHash")).toBeGreaterThanOrEqual(1769);
  });

  it("are started by the importer, which may StartExecution on the fan-out state machine and nothing else", () => {
    const vars = (props("ImporterLambdaFunction").Environment as { Variables: Record<string, Json> })
      .Variables;
    expect(resolve(vars.HANGAR_FANOUT_STATE_MACHINE)).toBe("ref:FanoutStateMachine");
    expect(vars.HANGAR_FANOUT_THRESHOLD).toBe(String(27 * 1024 ** 3));
    const starts = ofType("AWS::IAM::Role").flatMap(([id]) =>
      statementsOf(id)
        .filter((st) => asList(st.Action).some((a) => a.startsWith("states:")))
        .map((st) => [id, asList(st.Action), asList(st.Resource).map(resolve)]),
    );
    expect(starts).toEqual([["ImporterRole", ["states:StartExecution"], ["ref:FanoutStateMachine"]]]);
  });

  it("lets no fan-out function write under staging/, and the workers only write parts of images/", () => {
    for (const key of fanoutFns) {
      const role = roleId(fileOf(key));
      expect(allowed(role, "s3:PutObject", `${BUCKET_ARN}/staging/*`), role).toBe(false);
    }
    expect(allowed("FanoutWorkerRole", "s3:PutObject", `${BUCKET_ARN}/images/*`)).toBe(true);
    expect(allowed("FanoutWorkerRole", "s3:DeleteObject", `${BUCKET_ARN}/images/*`)).toBe(false);
    expect(allowed("FanoutHashRole", "s3:PutObject", `${BUCKET_ARN}/images/*`)).toBe(false);
    // The hash links read the stored image and, for a converted upload's declared sha256, the upload.
    expect(allowed("FanoutHashRole", "s3:GetObject", `${BUCKET_ARN}/images/*`)).toBe(true);
    expect(allowed("FanoutHashRole", "s3:GetObject", `${BUCKET_ARN}/staging/*`)).toBe(true);
    expect(allowed("FanoutControlRole", "s3:AbortMultipartUpload", `${BUCKET_ARN}/images/*`)).toBe(true);
  });
});

describe("image bucket", () => {
  it("has the deterministic name the roles refer to", () => {
    expect(resolve(props("ImagesBucket").BucketName)).toBe(BUCKET);
  });

  it("blocks public access, enforces TLS and encrypts at rest", () => {
    const p = props("ImagesBucket");
    expect(p.PublicAccessBlockConfiguration).toEqual({
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    });
    expect(p.BucketEncryption).toEqual({
      ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: "AES256" } }],
    });
    const policy = props("ImagesBucketPolicy");
    expect(resolve(policy.Bucket)).toBe("ref:ImagesBucket");
    expect(JSON.stringify(policy.PolicyDocument)).toContain('"aws:SecureTransport":"false"');
  });

  it("allows browser uploads and downloads and exposes ETag", () => {
    const rules = (props("ImagesBucket").CorsConfiguration as { CorsRules: Record<string, Json>[] })
      .CorsRules;
    expect(rules).toHaveLength(1);
    const rule = rules[0] ?? {};
    expect(rule.AllowedMethods).toEqual(expect.arrayContaining(["PUT", "GET", "HEAD"]));
    expect(rule.ExposedHeaders).toContain("ETag");
    expect(rule.AllowedOrigins).toBeDefined();
  });

  it("aborts incomplete multipart uploads after 2 days and expires spool/ after 1, never current staging/ objects", () => {
    const rules = (props("ImagesBucket").LifecycleConfiguration as { Rules: Record<string, Json>[] }).Rules;
    expect(rules.every((r) => r.Status === "Enabled")).toBe(true);
    expect(rules).toContainEqual(
      expect.objectContaining({ AbortIncompleteMultipartUpload: { DaysAfterInitiation: 2 } }),
    );
    expect(rules).toContainEqual(expect.objectContaining({ Prefix: "spool/", ExpirationInDays: 1 }));
    // An image imported as it is keeps its data under staging/: no rule may expire it there, current or not.
    const reachesStaging = (r: Record<string, Json>) => "staging/".startsWith(String(r.Prefix ?? ""));
    for (const rule of rules.filter(reachesStaging)) {
      expect(rule.ExpirationInDays, String(rule.Id)).toBeUndefined();
      expect(rule.NoncurrentVersionExpiration, String(rule.Id)).toBeUndefined();
    }
  });

  it("keeps object versions; leaked noncurrent versions and bare delete markers expire", () => {
    const bucket = props("ImagesBucket");
    expect(bucket.VersioningConfiguration).toEqual({ Status: "Enabled" });
    const rules = (bucket.LifecycleConfiguration as { Rules: Record<string, Json>[] }).Rules;
    for (const prefix of ["images/", "spool/"]) {
      expect(rules).toContainEqual(
        expect.objectContaining({ Prefix: prefix, NoncurrentVersionExpiration: { NoncurrentDays: 1 } }),
      );
    }
    expect(rules).toContainEqual(expect.objectContaining({ Prefix: "", ExpiredObjectDeleteMarker: true }));
  });

  it("lets the writers of objects make and copy from the objects of zeros, which no rule expires", () => {
    for (const role of ["ImporterRole", "WebDownloadRole", "FanoutWorkerRole"]) {
      for (const action of ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"]) {
        expect(allowed(role, action, `${BUCKET_ARN}/zeros/*`), `${role} ${action}`).toBe(true);
      }
    }
    const rules = (props("ImagesBucket").LifecycleConfiguration as { Rules: Record<string, Json>[] }).Rules;
    for (const rule of rules.filter((r) => "zeros/".startsWith(String(r.Prefix ?? "")))) {
      expect(rule.ExpirationInDays, String(rule.Id)).toBeUndefined();
    }
    expect(rules).toContainEqual(
      expect.objectContaining({ Prefix: "zeros/", NoncurrentVersionExpiration: { NoncurrentDays: 1 } }),
    );
  });

  it("lets every role that deletes objects delete their versions", () => {
    for (const [role, resource] of [
      ["ApiRole", "staging/*"],
      ["ApiRole", "images/*"],
      ["ImporterRole", "staging/*"],
      ["ImporterRole", "images/*"],
      ["ImporterRole", "spool/*"],
      ["SweeperRole", "staging/*"],
    ] as const) {
      expect(allowed(role, "s3:DeleteObjectVersion", `${BUCKET_ARN}/${resource}`), role).toBe(true);
    }
    expect(allowed("ApiRole", "s3:GetObjectVersion", `${BUCKET_ARN}/staging/*`)).toBe(true);
    expect(allowed("ImporterRole", "s3:GetObjectVersion", `${BUCKET_ARN}/staging/*`)).toBe(true);
    expect(allowed("ImporterRole", "s3:ListBucketVersions", BUCKET_ARN)).toBe(true);
    // The sweeper lists the versions under staging/ to find what was written over a kept upload.
    expect(allowed("SweeperRole", "s3:ListBucketVersions", BUCKET_ARN)).toBe(true);
  });
});

describe("image table", () => {
  it("is on-demand with point-in-time recovery", () => {
    const p = props("ImagesTable");
    expect(p.BillingMode).toBe("PAY_PER_REQUEST");
    expect(p.PointInTimeRecoverySpecification).toEqual({ PointInTimeRecoveryEnabled: true });
  });

  it("has the key schema and indexes of tableDefinition()", () => {
    const p = props("ImagesTable");
    const expected = tableDefinition("ignored");
    const byName = (a: { AttributeName?: string }, b: { AttributeName?: string }) =>
      String(a.AttributeName).localeCompare(String(b.AttributeName));
    expect([...(p.AttributeDefinitions as { AttributeName: string }[])].sort(byName)).toEqual(
      [...(expected.AttributeDefinitions ?? [])].sort(byName),
    );
    expect(p.KeySchema).toEqual(expected.KeySchema);
    expect(p.GlobalSecondaryIndexes).toEqual(expected.GlobalSecondaryIndexes);
    expect(p.LocalSecondaryIndexes).toEqual(expected.LocalSecondaryIndexes);
  });
});

describe("HTTP API", () => {
  const UNAUTHENTICATED = ["GET /", "GET /versions", "GET /openapi.json", "OPTIONS /v2/{proxy+}"];

  it("has no gateway authorizer: the API function answers every request, a bad token with Glance's 401", () => {
    expect(ofType("AWS::ApiGatewayV2::Authorizer")).toEqual([]);
    const routes = ofType("AWS::ApiGatewayV2::Route").map(([, r]) => r.Properties ?? {});
    expect(routes.map((r) => r.RouteKey).sort()).toEqual(
      [...UNAUTHENTICATED, "ANY /v2/{proxy+}", "ANY /{proxy+}"].sort(),
    );
    for (const route of routes) {
      expect(route.AuthorizationType ?? "NONE", String(route.RouteKey)).toBe("NONE");
      expect(route.AuthorizerId, String(route.RouteKey)).toBeUndefined();
    }
  });

  it("sends every route, /v2 included, to the API function", () => {
    const integrations = ofType("AWS::ApiGatewayV2::Integration").map(([, r]) => r.Properties ?? {});
    expect(integrations).toHaveLength(1);
    expect(JSON.stringify(integrations[0]?.IntegrationUri)).toContain("ApiLambdaFunction");
    expect(integrations[0]?.PayloadFormatVersion).toBe("2.0");
  });
});

describe("the api bundle answers tokens as the local stack does", () => {
  const ISSUER = "https://issuer.test/";
  const AUDIENCE = "hangar";
  const REFUSED = "The request you have made requires authentication";
  const unauthorized = (message: string, reason: string) => ({
    status: 401,
    type: "application/json",
    body: { error: { code: 401, title: "Unauthorized", message, reason } },
  });
  const MISSING = unauthorized(`${REFUSED}.`, "UNAUTHENTICATED");
  const EXPIRED = unauthorized(`${REFUSED}: the token has expired.`, "TOKEN_EXPIRED");
  const INVALID = unauthorized(`${REFUSED}: the token is not valid.`, "TOKEN_INVALID");
  const api = () => path.join(tree, "dist/api/index.mjs");
  // Storage endpoints on the discard port: a request that got past the token check would fail loudly.
  const env = (jwt: Record<string, string>) => ({
    AWS_REGION: REGION,
    AWS_ACCESS_KEY_ID: "AKIAHANGAROFFLINE000",
    AWS_SECRET_ACCESS_KEY: "offline-packaging-only",
    HANGAR_TABLE: "hangar-test",
    HANGAR_BUCKET: BUCKET,
    HANGAR_S3_ENDPOINT: "http://127.0.0.1:9",
    HANGAR_DYNAMODB_ENDPOINT: "http://127.0.0.1:9",
    HANGAR_JWT_ISSUER: ISSUER,
    HANGAR_JWT_AUDIENCE: AUDIENCE,
    ...jwt,
  });
  const get = (path: string, headers: Record<string, string> = {}) =>
    httpApiEvent({ method: "GET", path, headers });

  it(
    "401 with Glance's body for a missing, expired, forged, misaddressed or malformed token; 200 for a good one",
    async () => {
      const { privateKey } = await generateKeyPair("ES256", { extractable: true });
      const { privateKey: otherKey } = await generateKeyPair("ES256", { extractable: true });
      const key = await exportJWK(privateKey);
      const alice = { sub: "alice", project_id: "p1", roles: ["member"] };
      const sign = (opts: SignOptions = {}, claims: TokenClaims = alice, jwk = key) =>
        signToken(jwk, claims, { issuer: ISSUER, audience: AUDIENCE, expiresIn: "5m", ...opts });
      const good = await sign();
      const bad: [string, Record<string, string>, unknown][] = [
        ["no token", {}, MISSING],
        ["expired", { "x-auth-token": await sign({ expiresIn: "-1m" }) }, EXPIRED],
        [
          "signed by another key",
          { "x-auth-token": await sign({}, alice, await exportJWK(otherKey)) },
          INVALID,
        ],
        ["tampered signature", { "x-auth-token": `${good.slice(0, -4)}AAAA` }, INVALID],
        ["another issuer", { "x-auth-token": await sign({ issuer: "https://elsewhere.test/" }) }, INVALID],
        [
          "another audience",
          { authorization: `Bearer ${await sign({ audience: "someone-else" })}` },
          INVALID,
        ],
        [
          "no project",
          { "x-auth-token": await sign({}, { sub: "alice", roles: [] } as unknown as TokenClaims) },
          INVALID,
        ],
        ["garbage", { "x-auth-token": "not-a-token" }, INVALID],
        ["Basic scheme", { authorization: `Basic ${good}` }, MISSING],
      ];
      const { results } = await invoke(
        api(),
        env({ HANGAR_JWT_PUBLIC_JWK: JSON.stringify(publicJwk(key)) }),
        [
          ...bad.map(([, headers]) => get("/v2/images", headers)),
          get("/v2/schemas/image", { "x-auth-token": good }),
          get("/v2/schemas/image", { authorization: `bearer ${good}` }),
        ],
      );
      const answers = results.map(seen);
      for (const [i, [what, , expected]] of bad.entries()) expect(answers[i], what).toEqual(expected);
      for (const answer of answers.slice(bad.length)) {
        expect(answer.status).toBe(200);
        expect(answer.body).toMatchObject({ name: "image" });
      }
    },
    SPAWN_TIMEOUT,
  );

  it(
    "500 with the generic body, not a 401, when the key set cannot be fetched",
    async () => {
      const { privateKey } = await generateKeyPair("ES256", { extractable: true });
      const token = await signToken(
        { ...(await exportJWK(privateKey)), kid: "k1" },
        { sub: "alice", project_id: "p1", roles: [] },
        { issuer: ISSUER, audience: AUDIENCE, expiresIn: "5m" },
      );
      // Nothing listens on the discard port: the fetch is refused at once, on loopback.
      const { results, log } = await invoke(
        api(),
        env({ HANGAR_JWT_JWKS_URL: "http://127.0.0.1:9/jwks.json" }),
        [get("/v2/images", { "x-auth-token": token })],
      );
      expect(results.map(seen)).toEqual([
        {
          status: 500,
          type: "application/json",
          body: {
            error: {
              code: 500,
              title: "Internal Server Error",
              message: "The server could not complete the request.",
              reason: "INTERNAL_ERROR",
            },
          },
        },
      ]);
      expect(log).toContain("TokenKeysUnavailableError");
    },
    SPAWN_TIMEOUT,
  );
});

describe("build plugin (infra/serverless/build-plugin.cjs)", () => {
  type Hook = () => Promise<void>;
  const load = () =>
    createRequire(import.meta.url)(path.join(root, "infra/serverless/build-plugin.cjs")) as new (
      serverless: unknown,
      options: Record<string, string>,
      utils: unknown,
    ) => { hooks: Record<string, Hook> };
  // The functions as osls hands them over: keyed by function name, artifacts as serverless.yml writes them.
  const serverless = (functions: Record<string, string | undefined>) => ({
    serviceDir: tree,
    service: {
      getAllFunctions: () => Object.keys(functions),
      getFunction: (name: string) => ({ package: { artifact: functions[name] } }),
    },
  });
  const quiet = { log: { notice: () => {} } };
  const Plugin = load();

  it(
    "`deploy function -f webDownload` rebuilds that function's bundle and no other",
    async () => {
      const mtime = async (file: string) => (await stat(path.join(tree, "dist", file))).mtimeMs;
      const before = { web: await mtime("web-download/index.mjs"), api: await mtime("api/index.mjs") };
      const plugin = new Plugin(
        serverless({ api: "dist/api.zip", webDownload: "dist/web-download.zip", other: "elsewhere.zip" }),
        { function: "webDownload" },
        quiet,
      );
      await plugin.hooks["before:package:function:package"]?.();
      expect(await mtime("web-download/index.mjs")).toBeGreaterThan(before.web);
      expect(await mtime("api/index.mjs")).toBe(before.api);
      // A function whose artifact is not a Hangar bundle is left to osls.
      const other = new Plugin(serverless({ other: "elsewhere.zip" }), { function: "other" }, quiet);
      await expect(other.hooks["before:package:function:package"]?.()).resolves.toBeUndefined();
    },
    SPAWN_TIMEOUT * 2,
  );

  it("fails the packaging when an artifact names a handler that does not exist", async () => {
    const plugin = new Plugin(serverless({ ghost: "dist/ghost.zip" }), {}, quiet);
    await expect(plugin.hooks["before:package:createDeploymentArtifacts"]?.()).rejects.toThrow(/ghost/);
  });
});

describe("CloudFormation lint", () => {
  const cfnLint = (() => {
    try {
      execFileSync("cfn-lint", ["--version"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();

  // cfn-lint is optional (a Python tool); where it is installed it checks resource properties and IAM
  // action names against AWS's specifications. W3005 flags redundant DependsOn that osls generates.
  it.runIf(cfnLint)(
    "finds no errors or warnings in the packaged template",
    async () => {
      const file = path.join(workDir, "package", "cloudformation-template-update-stack.json");
      const result = await run("cfn-lint", ["--ignore-checks", "W3005", "--", file], {
        timeout: 60_000,
      }).then(
        () => "",
        (e: { stdout?: string }) => e.stdout ?? String(e),
      );
      expect(result).toBe("");
    },
    90_000,
  );
});
