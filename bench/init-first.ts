/**
 * Init and first request of the built api, in one fresh process: the import of the bundle with its
 * configuration (as bench/budgets.ts times it), then one API Gateway event through its handler, a show
 * of an active image with a valid token (`GET /v2/images/{id}`). The process serves the two things the
 * request reaches for itself, on a loopback port: the issuer's JWKS and a DynamoDB stand-in that answers
 * the image's item (no local stack needed). What a cold start does that init no longer does (the token's
 * key set and claims schema, the catalogue, Node's fetch) is paid in the first request and counted here.
 *
 *   npx tsx bench/init-first.ts [--runs N] NAME=DIR [NAME=DIR…]   # DIR: node scripts/build.mjs --outdir DIR
 *
 * Each round runs every build once on each vCPU (`taskset -c`), in turn; prints per build and vCPU the
 * median wall and CPU time of init, of the first request, and of both.
 */
import { spawnSync } from "node:child_process";
import { join, resolve } from "node:path";
import { initEnv, loadAverageText, median, pinnedVcpus } from "./budgets.ts";

const CHILD = `
import { createServer } from "node:http";
import { generateKeyPairSync, sign, randomUUID } from "node:crypto";
import { pathToFileURL } from "node:url";
const b64 = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");
const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
const jwk = { ...publicKey.export({ format: "jwk" }), kid: "k1", alg: "ES256", use: "sig" };
const now = Math.floor(Date.now() / 1000);
const head = b64({ alg: "ES256", kid: "k1", typ: "JWT" });
const body = b64({ iss: process.env.HANGAR_JWT_ISSUER, aud: "hangar", sub: "bench", project_id: "bench", roles: ["member"], iat: now, exp: now + 600 });
const token = head + "." + body + "." + sign("sha256", Buffer.from(head + "." + body), { key: privateKey, dsaEncoding: "ieee-p1363" }).toString("base64url");
const id = randomUUID();
const t = "2026-01-01T00:00:00.000Z";
const S = (s) => ({ S: s });
const item = { pk: S("IMAGE#" + id), sk: S("IMAGE"), id: S(id), name: S("bench"), status: S("active"), visibility: S("private"), protected: { BOOL: false }, owner: S("bench"), disk_format: S("raw"), container_format: S("bare"), size: { N: "4096" }, virtual_size: { N: "4096" }, checksum: S("0".repeat(32)), os_hash_algo: S("sha512"), os_hash_value: S("0".repeat(128)), created_at: S(t), updated_at: S(t) };
const server = createServer((req, res) => {
  let data = "";
  req.on("data", (d) => { data += d; });
  req.on("end", () => {
    if (req.method === "GET") { res.writeHead(200, { "content-type": "application/json" }); res.end(JSON.stringify({ keys: [jwk] })); return; }
    const target = String(req.headers["x-amz-target"] ?? "");
    const out = target.endsWith(".GetItem") ? { Item: item } : target.endsWith(".Query") ? { Items: [item], Count: 1, ScannedCount: 1 } : {};
    res.writeHead(200, { "content-type": "application/x-amz-json-1.0" });
    res.end(JSON.stringify(out));
  });
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const at = "http://127.0.0.1:" + server.address().port;
process.env.HANGAR_DYNAMODB_ENDPOINT = at;
process.env.HANGAR_JWT_JWKS_URL = at + "/jwks.json";
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const w0 = performance.now(), c0 = cpu();
const { handler } = await import(pathToFileURL(process.argv[1]).href);
const w1 = performance.now(), c1 = cpu();
const path = "/v2/images/" + id;
const event = { version: "2.0", routeKey: "$default", rawPath: path, rawQueryString: "", headers: { authorization: "Bearer " + token, host: "api.bench", "x-forwarded-proto": "https" }, requestContext: { accountId: "1", apiId: "bench", domainName: "api.bench", domainPrefix: "api", http: { method: "GET", path, protocol: "HTTP/1.1", sourceIp: "127.0.0.1", userAgent: "bench" }, requestId: "r1", routeKey: "$default", stage: "$default", time: "", timeEpoch: 0 }, isBase64Encoded: false };
const context = { awsRequestId: "r1", functionName: "hangar-api", functionVersion: "1", invokedFunctionArn: "arn:aws:lambda:us-east-1:1:function:hangar-api", memoryLimitInMB: "1024", logGroupName: "g", logStreamName: "s", callbackWaitsForEmptyEventLoop: true, getRemainingTimeInMillis: () => 29000, done() {}, fail() {}, succeed() {} };
const response = await handler(event, context);
const w2 = performance.now(), c2 = cpu();
process.stdout.write(JSON.stringify({ status: response.statusCode, initMs: w1 - w0, initCpuMs: c1 - c0, firstMs: w2 - w1, firstCpuMs: c2 - c1 }) + "\\n");
process.exit(0);
`;

interface Report {
  status: number;
  initMs: number;
  initCpuMs: number;
  firstMs: number;
  firstCpuMs: number;
}

function once(bundle: string, cpu: number): Report {
  const env = { PATH: process.env.PATH ?? "", ...initEnv("api"), HANGAR_LOG_LEVEL: "ERROR" };
  const r = spawnSync(
    "taskset",
    ["-c", String(cpu), process.execPath, "--input-type=module", "-e", CHILD, bundle],
    { env, encoding: "utf8", timeout: 60_000 },
  );
  const line = r.stdout.trim().split("\n").at(-1) ?? "";
  if (r.status !== 0 || !line.startsWith("{"))
    throw new Error(`${bundle}: ${r.status} ${r.stderr}${r.stdout}`);
  const report = JSON.parse(line) as Report;
  if (report.status !== 200) throw new Error(`${bundle}: the show answered ${report.status}: ${r.stdout}`);
  return report;
}

let runs = 15;
const builds: { name: string; dir: string }[] = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i] ?? "";
  if (arg === "--runs") runs = Number(argv[++i]);
  else if (arg.includes("=")) {
    const at = arg.indexOf("=");
    builds.push({ name: arg.slice(0, at), dir: resolve(arg.slice(at + 1)) });
  } else throw new Error(`unknown argument ${arg}`);
}
if (builds.length === 0) throw new Error("usage: init-first.ts [--runs N] NAME=DIR [NAME=DIR…]");
const vcpus = pinnedVcpus();
const load = loadAverageText;
console.log(`load average before: ${load()}; ${runs} rounds, vCPUs ${vcpus.join(", ")}`);
const results = new Map<string, Report[]>();
for (let round = 0; round < runs; round++) {
  const order = round % 2 === 0 ? builds : [...builds].reverse();
  for (const v of vcpus) {
    for (const b of order) {
      const key = `${b.name} vCPU${v}`;
      results.set(key, [...(results.get(key) ?? []), once(join(b.dir, "api", "index.mjs"), v)]);
    }
  }
  process.stderr.write(`round ${round + 1}/${runs}\n`);
}
const m = (rs: Report[], f: (r: Report) => number) => median(rs.map(f)).toFixed(1);
console.table(
  Object.fromEntries(
    [...results].map(([key, rs]) => [
      key,
      {
        "init ms": m(rs, (r) => r.initMs),
        "first ms": m(rs, (r) => r.firstMs),
        "init + first ms": m(rs, (r) => r.initMs + r.firstMs),
        "init CPU ms": m(rs, (r) => r.initCpuMs),
        "first CPU ms": m(rs, (r) => r.firstCpuMs),
        "init + first CPU ms": m(rs, (r) => r.initCpuMs + r.firstCpuMs),
      },
    ]),
  ),
);
console.log(`load average after: ${load()}`);
