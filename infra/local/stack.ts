import { randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import {
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ResourceNotFoundException,
} from "@aws-sdk/client-dynamodb";
import {
  CreateBucketCommand,
  HeadBucketCommand,
  PutBucketNotificationConfigurationCommand,
  PutBucketVersioningCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import type { JWK } from "jose";
import { tableDefinition, upgradeTable } from "../../functions/adapters/dynamodb/table.ts";
import { STAGING_PREFIX } from "../../functions/core/image/image.ts";
import { ensureDynamoDbLocal, ensureMinio } from "./binaries.ts";
import { LocalStackError } from "./errors.ts";
import { buildFunctionBundles } from "./lambda/build.ts";
import type { FunctionKey } from "./lambda/functions.ts";
import { functionName } from "./lambda/functions.ts";
import { LocalLambda } from "./lambda/index.ts";
import { MinioEnvelope, RecentEvents, toS3Event } from "./lambda/s3-events.ts";
import {
  assertPortFree,
  freePort,
  killStaleChildren,
  ServiceGroup,
  startDynamoDbLocal,
  startMinio,
  webhookTargets,
} from "./services.ts";
import {
  DEMO_IDENTITIES,
  LOCAL_JWT_AUDIENCE,
  LOCAL_JWT_ISSUER,
  loadOrCreateSigningKey,
  publicJwk,
  signToken,
} from "./tokens.ts";

/** What `<home>/local.json` holds: everything a client, the CLI or a test needs to talk to the stack. */
/**
 * Hangar's configuration (HANGAR_* variables) for a local stack's endpoints and signing key: what the
 * stack itself, and scripts or tests that build their own Hangar against a running stack, pass to
 * `loadConfig`.
 */
export function hangarEnv(
  info: Pick<
    LocalInfo,
    "table" | "bucket" | "region" | "s3Endpoint" | "dynamodbEndpoint" | "jwtIssuer" | "jwtAudience"
  >,
  signingKey: JWK,
): Record<string, string> {
  return {
    HANGAR_TABLE: info.table,
    HANGAR_BUCKET: info.bucket,
    AWS_REGION: info.region,
    HANGAR_S3_ENDPOINT: info.s3Endpoint,
    HANGAR_DYNAMODB_ENDPOINT: info.dynamodbEndpoint,
    HANGAR_JWT_ISSUER: info.jwtIssuer,
    HANGAR_JWT_AUDIENCE: info.jwtAudience,
    HANGAR_JWT_PUBLIC_JWK: JSON.stringify(publicJwk(signingKey)),
  };
}

export interface LocalInfo {
  apiUrl: string;
  s3Endpoint: string;
  dynamodbEndpoint: string;
  region: string;
  bucket: string;
  table: string;
  accessKeyId: string;
  secretAccessKey: string;
  jwtIssuer: string;
  jwtAudience: string;
  /** The local stand-in for the Lambda API (Invoke); `npm run replay` queues failed events through it. */
  lambdaEndpoint: string;
  tokens: { admin: string; alice: string; bob: string };
}

export interface StackOptions {
  home: string;
  cacheDir?: string;
  apiPort: number;
  s3Port: number;
  dynamodbPort: number;
  /** Start from empty storage and table (the signing key is kept, so old tokens stay valid). */
  reset: boolean;
  log?: (line: string) => void;
  /** Overrides for Hangar's configuration (HANGAR_* variables) of every function, applied last. */
  env?: Record<string, string>;
  /** Variables for one function only, as serverless.yml's `functions.<key>.environment`. */
  functionEnv?: Partial<Record<FunctionKey, Record<string, string>>>;
  /**
   * Bundles already built (`<dir>/<handler>/index.mjs`, see `buildFunctionBundles`); by default the stack
   * builds them into `<home>/functions` at start.
   */
  bundlesDir?: string;
  /**
   * Waits before the retries of a failed asynchronous invocation (default HANGAR_LOCAL_RETRY_DELAYS,
   * or 1 s and 2 s; AWS waits about 1 and 2 minutes).
   */
  retryDelaysMs?: readonly number[];
  /**
   * Queue bucket events on disk (`<home>/minio-events`) so none is lost while the receiver is down
   * (default). MinIO polls that queue every 3 s, so `false` trades durability for immediate delivery.
   */
  durableEvents?: boolean;
  /** How often to run `hangar.sweep()`, as the AWS schedule does (default 1 hour; 0 never). */
  sweepIntervalMs?: number;
  /**
   * How often to re-drive stale imports, as the AWS schedule does (default 1 minute; 0 never). The first
   * re-drive runs as soon as the stack is up, for imports a crash of the stack left behind.
   */
  redriveIntervalMs?: number;
  /** Forward every line MinIO and DynamoDB Local print to `log`. */
  verboseChildren?: boolean;
}

export interface LocalStack {
  info: LocalInfo;
  signingKey: JWK;
  /** Path of the written local.json. */
  infoFile: string;
  /** Where MinIO delivers bucket events (loopback, bearer-token protected); not in local.json. */
  webhookUrl: string;
  /** The functions, their runtimes and the asynchronous invocation queue. */
  lambda: LocalLambda;
  stop(): Promise<void>;
  /** Rejects (after tearing everything down) when a child service dies; resolves after stop(). */
  done: Promise<void>;
}

export const LOCAL_BUCKET = "hangar-local";
export const LOCAL_TABLE = "hangar-local";
export const LOCAL_REGION = "us-east-1";
/** Fixed local credentials: MinIO's root user. DynamoDB Local accepts any key id made of letters and digits only. */
export const LOCAL_ACCESS_KEY_ID = "hangarlocal";
export const LOCAL_SECRET_ACCESS_KEY = "hangarlocalsecret";
/** The ARN MinIO gives the webhook target configured with the `_HANGAR` environment suffix. */
export const WEBHOOK_QUEUE_ARN = "arn:minio:sqs::HANGAR:webhook";

/** Stack-owned configuration a stray shell variable must not redirect; only `opts.env` may override these. */
const STACK_OWNED = new Set([
  "HANGAR_S3_ENDPOINT",
  "HANGAR_DYNAMODB_ENDPOINT",
  "HANGAR_JWT_ISSUER",
  "HANGAR_JWT_AUDIENCE",
  "HANGAR_JWT_PUBLIC_JWK",
  "HANGAR_JWT_JWKS_URL",
]);

/** How long stop() waits for imports started by storage events before stopping storage under them. */
const IN_FLIGHT_GRACE_MS = 30_000;
/** Local retry delays of asynchronous invocations, in seconds (AWS: about 60 and 120). */
const DEFAULT_RETRY_DELAYS = "1,2";
/** MinIO's event envelopes are small; anything bigger is not one. */
const MAX_EVENT_BYTES = 4 * 1024 * 1024;

/**
 * Starts MinIO, DynamoDB Local, Hangar's functions (built bundles, each in a process of its own), the
 * local HTTP API and Lambda Invoke API and the event receiver on loopback, wires bucket events to the
 * importer, and writes `<home>/local.json` once everything answers. Refuses, touching nothing, while
 * another live process runs a stack from the same home.
 */
export async function startStack(opts: StackOptions): Promise<LocalStack> {
  const log = opts.log ?? (() => {});
  const home = opts.home;
  const cacheDir = opts.cacheDir ?? join(home, "cache");
  const infoFile = join(home, "local.json");
  const childrenFile = join(home, "children.json");
  const dirs = {
    minioData: join(home, "minio-data"),
    minioEvents: join(home, "minio-events"),
    dynamodb: join(home, "dynamodb"),
  };

  await mkdir(home, { recursive: true });
  const lockFile = join(home, "stack.lock");
  // Before anything else: a second start must leave a running stack, and its local.json, alone.
  await takeLock(lockFile, infoFile, home);
  try {
    return await startLocked(opts, { log, home, cacheDir, infoFile, childrenFile, dirs, lockFile });
  } catch (err) {
    await rm(lockFile, { force: true });
    throw err;
  }
}

/**
 * Takes `<home>/stack.lock` for this process, or refuses with where the running stack is when another
 * live process holds it. A lock left by a process that is gone is taken over.
 */
async function takeLock(lockFile: string, infoFile: string, home: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(
        lockFile,
        `${JSON.stringify({ pid: process.pid, startedAt: new Date().toISOString() })}\n`,
        {
          flag: "wx",
        },
      );
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const holder = await readHolder(lockFile);
    if (holder !== undefined && holder !== process.pid && (await isNodeProcess(holder))) {
      const info = await readFile(infoFile, "utf8")
        .then((t) => JSON.parse(t) as { apiUrl?: unknown })
        .catch(() => undefined);
      const where =
        typeof info?.apiUrl === "string"
          ? `, API ${info.apiUrl}, endpoints in ${infoFile}`
          : " (still starting)";
      throw new LocalStackError(
        `a local stack is already running from ${home} (pid ${holder}${where}); it was left alone. ` +
          `Stop it first (Ctrl-C in its terminal, or kill ${holder}), or run another one with its own HANGAR_HOME and ports.`,
      );
    }
    // Left by a process that is gone: take it over.
    await rm(lockFile, { force: true });
  }
  throw new LocalStackError(`cannot take ${lockFile}: another start is taking it at the same time`);
}

async function readHolder(lockFile: string): Promise<number | undefined> {
  try {
    const pid = (JSON.parse(await readFile(lockFile, "utf8")) as { pid?: unknown }).pid;
    return typeof pid === "number" && Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** True when `pid` runs Node (pids are reused: an unrelated process does not hold the lock). */
async function isNodeProcess(pid: number): Promise<boolean> {
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
    return /(^|\/)node(js)?\0|tsx|vitest/.test(cmdline);
  } catch {
    return false;
  }
}

async function startLocked(
  opts: StackOptions,
  paths: {
    log: (line: string) => void;
    home: string;
    cacheDir: string;
    infoFile: string;
    childrenFile: string;
    dirs: { minioData: string; minioEvents: string; dynamodb: string };
    lockFile: string;
  },
): Promise<LocalStack> {
  const { log, home, cacheDir, infoFile, childrenFile, dirs, lockFile } = paths;
  await rm(infoFile, { force: true });
  const stale = await killStaleChildren(await readPids(childrenFile), home);
  if (stale.length > 0)
    log(`stopped ${stale.length} service(s) left running by an earlier run (pids ${stale})`);

  await assertPortFree(opts.apiPort, "127.0.0.1", "Hangar API", "HANGAR_API_PORT");
  await assertPortFree(opts.s3Port, "127.0.0.1", "MinIO S3", "HANGAR_S3_PORT");
  // DynamoDB Local cannot be told to bind loopback only; it takes the port on every interface.
  await assertPortFree(opts.dynamodbPort, "0.0.0.0", "DynamoDB Local", "HANGAR_DYNAMODB_PORT");

  const [minioBin, dynamo] = await Promise.all([
    ensureMinio(cacheDir, { log }),
    ensureDynamoDbLocal(cacheDir, { log }),
  ]);

  if (opts.reset) {
    log("reset: removing stored images, records and queued events");
    await Promise.all(Object.values(dirs).map((d) => rm(d, { recursive: true, force: true })));
  }
  await Promise.all(Object.values(dirs).map((d) => mkdir(d, { recursive: true })));

  const retryDelaysMs = opts.retryDelaysMs ?? retryDelaysFrom(process.env.HANGAR_LOCAL_RETRY_DELAYS);
  // esbuild runs while MinIO and DynamoDB Local start.
  const bundles = opts.bundlesDir
    ? Promise.resolve(opts.bundlesDir)
    : timed(
        () => buildFunctionBundles(join(home, "functions")),
        (ms) => log(`functions built in ${ms} ms`),
      );
  bundles.catch(() => {});

  const signingKey = await loadOrCreateSigningKey(join(home, "jwt-key.json"));
  const group = new ServiceGroup();
  const cleanups: (() => Promise<void>)[] = [];
  const receiver = new EventReceiver(log);
  let lambda: LocalLambda | undefined;
  let stopped: Promise<void> | undefined;

  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      for (const cleanup of cleanups.reverse()) {
        await cleanup().catch((err: unknown) => log(`stop: ${errorMessage(err)}`));
      }
      await lambda?.stop(IN_FLIGHT_GRACE_MS).catch((err: unknown) => log(`stop: ${errorMessage(err)}`));
      await group.stop();
      await rm(infoFile, { force: true });
      await rm(childrenFile, { force: true });
      await rm(lockFile, { force: true });
    })();
    return stopped;
  };

  try {
    const recentFile = join(home, "delivered-events.json");
    await receiver.loadRecent(recentFile);
    const webhookServer = await receiver.listen();
    cleanups.push(async () => {
      await closeServer(webhookServer);
      await receiver.saveRecent(recentFile);
    });
    const webhookUrl = `http://127.0.0.1:${(webhookServer.address() as AddressInfo).port}/minio-events`;

    const childOutput = (name: string) =>
      opts.verboseChildren ? (l: string) => log(`[${name}] ${l}`) : undefined;
    const consolePort = await freePort();
    const minioOutput = childOutput("minio");
    const dynamoOutput = childOutput("dynamodb");
    const [minio, dynamodb] = await Promise.allSettled([
      startMinio({
        bin: minioBin,
        dataDir: dirs.minioData,
        port: opts.s3Port,
        consolePort,
        rootUser: LOCAL_ACCESS_KEY_ID,
        rootPassword: LOCAL_SECRET_ACCESS_KEY,
        webhook: {
          endpoint: webhookUrl,
          authToken: receiver.token,
          ...(opts.durableEvents === false ? {} : { queueDir: dirs.minioEvents }),
        },
        // The browser page is served by the local API, on loopback by either name.
        corsOrigins: [`http://127.0.0.1:${opts.apiPort}`, `http://localhost:${opts.apiPort}`],
        ...(minioOutput ? { onOutput: minioOutput } : {}),
      }),
      startDynamoDbLocal({
        ...dynamo,
        dbPath: dirs.dynamodb,
        port: opts.dynamodbPort,
        ...(dynamoOutput ? { onOutput: dynamoOutput } : {}),
      }),
    ]);
    for (const started of [minio, dynamodb]) if (started.status === "fulfilled") group.add(started.value);
    await writeFile(childrenFile, `${JSON.stringify(group.pids)}\n`);
    if (minio.status === "rejected") throw minio.reason;
    if (dynamodb.status === "rejected") throw dynamodb.reason;

    const s3Endpoint = `http://127.0.0.1:${opts.s3Port}`;
    const dynamodbEndpoint = `http://127.0.0.1:${opts.dynamodbPort}`;
    const env = hangarEnv(
      {
        table: LOCAL_TABLE,
        bucket: LOCAL_BUCKET,
        region: LOCAL_REGION,
        s3Endpoint,
        dynamodbEndpoint,
        jwtIssuer: LOCAL_JWT_ISSUER,
        jwtAudience: LOCAL_JWT_AUDIENCE,
      },
      signingKey,
    );
    for (const [key, value] of Object.entries(process.env)) {
      if (key.startsWith("HANGAR_") && value !== undefined && !STACK_OWNED.has(key)) env[key] = value;
    }
    Object.assign(env, opts.env);
    const bucket = env.HANGAR_BUCKET ?? LOCAL_BUCKET;
    const table = env.HANGAR_TABLE ?? LOCAL_TABLE;

    const credentials = { accessKeyId: LOCAL_ACCESS_KEY_ID, secretAccessKey: LOCAL_SECRET_ACCESS_KEY };
    await ensureBucket(s3Endpoint, credentials, bucket, opts.durableEvents !== false);
    await ensureTable(dynamodbEndpoint, credentials, table);

    const region = env.AWS_REGION ?? LOCAL_REGION;
    lambda = new LocalLambda({
      home,
      bundlesDir: await bundles,
      env,
      ...(opts.functionEnv ? { functionEnv: opts.functionEnv } : {}),
      credentials,
      region,
      apiPort: opts.apiPort,
      retryDelaysMs,
      log,
    });
    await lambda.start().catch((err: unknown) => {
      throw new LocalStackError(`cannot start the local functions: ${errorMessage(err)}`, { cause: err });
    });
    receiver.attach(lambda, region);

    const sweepEvery = opts.sweepIntervalMs ?? 3_600_000;
    if (sweepEvery > 0) {
      cleanups.push(schedule(lambda, sweepEvery, () => scheduledEvent(new Date(), region), log));
    }
    const redriveEvery = opts.redriveIntervalMs ?? 60_000;
    if (redriveEvery > 0) {
      // serverless.yml's second schedule of the sweeper passes this input instead of the event.
      cleanups.push(schedule(lambda, redriveEvery, () => ({ task: "redrive" }), log, { now: true }));
    }

    const tokens = {
      admin: await signToken(signingKey, DEMO_IDENTITIES.admin),
      alice: await signToken(signingKey, DEMO_IDENTITIES.alice),
      bob: await signToken(signingKey, DEMO_IDENTITIES.bob),
    };
    const info: LocalInfo = {
      apiUrl: `http://127.0.0.1:${opts.apiPort}`,
      s3Endpoint,
      dynamodbEndpoint,
      region,
      bucket,
      table,
      accessKeyId: LOCAL_ACCESS_KEY_ID,
      secretAccessKey: LOCAL_SECRET_ACCESS_KEY,
      jwtIssuer: env.HANGAR_JWT_ISSUER ?? LOCAL_JWT_ISSUER,
      jwtAudience: env.HANGAR_JWT_AUDIENCE ?? LOCAL_JWT_AUDIENCE,
      lambdaEndpoint: lambda.lambdaEndpoint,
      tokens,
    };

    const done = group.done.catch(async (err: unknown) => {
      await stop();
      throw err;
    });
    done.catch(() => {});

    // Last, and atomically: whoever sees local.json may rely on every endpoint in it answering.
    const tmp = `${infoFile}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600 });
    await rename(tmp, infoFile);

    return { info, signingKey, infoFile, webhookUrl, lambda, stop, done };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Invokes the sweeper every `everyMs` (and at once with `now`) with what an EventBridge schedule hands it,
 * asynchronously as EventBridge does; returns a function that cancels the schedule.
 */
function schedule(
  lambda: LocalLambda,
  everyMs: number,
  event: () => Record<string, unknown>,
  log: (line: string) => void,
  options: { now?: boolean } = {},
): () => Promise<void> {
  const fire = () => {
    lambda.invoker
      .enqueue(functionName("sweeper"), event())
      .catch((err: unknown) => log(`sweeper not scheduled: ${errorMessage(err)}`));
  };
  if (options.now) fire();
  const timer = setInterval(fire, everyMs);
  timer.unref();
  return async () => clearInterval(timer);
}

/** The event an EventBridge schedule (`rate(1 hour)`) hands to its target. */
export function scheduledEvent(time: Date, region: string): Record<string, unknown> {
  return {
    version: "0",
    id: randomUUID(),
    "detail-type": "Scheduled Event",
    source: "aws.events",
    account: "000000000000",
    time: time.toISOString().replace(/\.\d{3}Z$/, "Z"),
    region,
    resources: [`arn:aws:events:${region}:000000000000:rule/hangar-local-sweeper`],
    detail: {},
  };
}

/** `HANGAR_LOCAL_RETRY_DELAYS="1,2"` (seconds) as milliseconds. */
export function retryDelaysFrom(raw: string | undefined): number[] {
  const text = raw === undefined || raw.trim() === "" ? DEFAULT_RETRY_DELAYS : raw;
  const delays = text.split(",").map((s) => Number(s.trim()));
  if (delays.some((d) => !Number.isFinite(d) || d < 0))
    throw new LocalStackError(`HANGAR_LOCAL_RETRY_DELAYS=${raw} is not a comma-separated list of seconds`);
  return delays.map((d) => Math.round(d * 1000));
}

async function timed<T>(work: () => Promise<T>, report: (ms: number) => void): Promise<T> {
  const started = Date.now();
  const result = await work();
  report(Date.now() - started);
  return result;
}

async function ensureBucket(
  endpoint: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
  bucket: string,
  durableEvents: boolean,
): Promise<void> {
  const s3 = new S3Client({ endpoint, region: LOCAL_REGION, forcePathStyle: true, credentials });
  try {
    try {
      await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) throw err;
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    }
    // Versions keep an image's data immutable where it was uploaded (docs/uploads.md): an image imported
    // as it is stays the version the importer verified, whatever the upload link writes afterwards.
    await s3.send(
      new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: "Enabled" } }),
    );
    // Put every time: the configuration is ours, and a changed filter must not survive from an old run.
    await s3.send(
      new PutBucketNotificationConfigurationCommand({
        Bucket: bucket,
        NotificationConfiguration: {
          // Every target gets every event (durable: a queued one and an immediate one, see webhookTargets).
          QueueConfigurations: webhookTargets(durableEvents).map(({ id }) => ({
            Id: id === "HANGAR" ? "hangar-import" : `hangar-import-${id.toLowerCase()}`,
            QueueArn: `arn:minio:sqs::${id}:webhook`,
            Events: ["s3:ObjectCreated:*"],
            Filter: { Key: { FilterRules: [{ Name: "prefix", Value: STAGING_PREFIX }] } },
          })),
        },
      }),
    );
  } catch (err) {
    throw new LocalStackError(`cannot prepare bucket ${bucket} in MinIO: ${errorMessage(err)}`, {
      cause: err,
    });
  } finally {
    s3.destroy();
  }
}

async function ensureTable(
  endpoint: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
  table: string,
): Promise<void> {
  const ddb = new DynamoDBClient({ endpoint, region: LOCAL_REGION, credentials });
  try {
    try {
      await ddb.send(new DescribeTableCommand({ TableName: table }));
      // Data kept from an earlier run may predate an index: add it and index the items.
      await upgradeTable(ddb, table);
    } catch (err) {
      if (!(err instanceof ResourceNotFoundException)) throw err;
      await ddb.send(new CreateTableCommand(tableDefinition(table)));
    }
  } catch (err) {
    throw new LocalStackError(`cannot prepare table ${table} in DynamoDB Local: ${errorMessage(err)}`, {
      cause: err,
    });
  } finally {
    ddb.destroy();
  }
}

async function closeServer(server: Server): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    // Keep-alive connections would hold close() open for their idle timeout.
    server.closeAllConnections();
  });
}

/**
 * The receiving end of MinIO's webhook target, in the role S3 plays for Lambda: checks the bearer token,
 * validates MinIO's envelope, turns it into the S3 event JSON AWS sends and queues it durably for the
 * importer (Lambda's asynchronous invocation) before it answers. Only a queued event is acknowledged;
 * anything else is refused so that MinIO keeps it and retries.
 */
class EventReceiver {
  readonly token = randomBytes(24).toString("hex");
  private target: { lambda: LocalLambda; region: string } | undefined;
  /** MinIO sends each event twice with durable events (at once, and from its disk queue): queue it once. */
  private recent = new RecentEvents();

  constructor(private readonly log: (line: string) => void) {}

  /** The events queued by the previous run, so that MinIO's copies of them still on its disk are not. */
  async loadRecent(file: string): Promise<void> {
    const saved = await readFile(file, "utf8").then(
      (t) => JSON.parse(t) as unknown,
      () => [],
    );
    if (!Array.isArray(saved)) return;
    const valid = (e: unknown): e is [string, number] =>
      Array.isArray(e) && typeof e[0] === "string" && typeof e[1] === "number";
    this.recent = new RecentEvents(saved.filter(valid));
  }

  async saveRecent(file: string): Promise<void> {
    await writeFile(file, `${JSON.stringify(this.recent.entries())}\n`);
  }

  /**
   * Until the functions are attached (events queued by MinIO in an earlier run arrive as soon as it
   * starts), deliveries are answered 503 so that MinIO keeps them and retries.
   */
  attach(lambda: LocalLambda, region: string): void {
    this.target = { lambda, region };
  }

  listen(): Promise<Server> {
    const server = createServer((req, res) => this.onRequest(req, res));
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen({ port: 0, host: "127.0.0.1" }, () => resolve(server));
    });
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    // MinIO probes the target with HEAD to decide whether it is online.
    if (req.method === "HEAD" || req.method === "GET") {
      res.writeHead(200).end();
      return;
    }
    if (req.method !== "POST") {
      res.writeHead(405).end();
      return;
    }
    if (!this.authorized(req.headers.authorization)) {
      this.log("storage event refused: bad or missing webhook token");
      res.writeHead(401).end();
      req.resume();
      return;
    }
    const target = this.target;
    if (!target) {
      res.writeHead(503).end();
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_EVENT_BYTES) tooBig = true;
      else chunks.push(chunk);
    });
    req.on("end", () => {
      if (tooBig) {
        res.writeHead(413).end();
        return;
      }
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        this.log("storage event refused: body is not JSON");
        res.writeHead(400).end();
        return;
      }
      const envelope = MinioEnvelope.safeParse(body);
      if (!envelope.success) {
        this.log(
          `storage event refused: not a MinIO event envelope (${envelope.error.issues[0]?.message ?? ""})`,
        );
        res.writeHead(400).end();
        return;
      }
      const event = toS3Event(envelope.data, target.region);
      const copy = this.recent.claim(envelope.data);
      if (!copy) {
        res.writeHead(200).end();
        return;
      }
      // Acknowledged once on disk, as S3 gets its 202 once Lambda has queued the event: the import runs
      // after, with retries, and MinIO's one-at-a-time delivery is not held up by it.
      target.lambda.invoker.enqueue(functionName("importer"), event).then(
        () => res.writeHead(200).end(),
        (err: unknown) => {
          copy.release();
          this.log(`storage event not queued, MinIO will retry: ${errorMessage(err)}`);
          res.writeHead(503).end();
        },
      );
    });
  }

  private authorized(header: string | undefined): boolean {
    const expected = Buffer.from(`Bearer ${this.token}`);
    const given = Buffer.from(header ?? "");
    return given.length === expected.length && timingSafeEqual(given, expected);
  }
}

async function readPids(file: string): Promise<number[]> {
  try {
    const parsed = JSON.parse(await readFile(file, "utf8")) as unknown;
    if (!Array.isArray(parsed)) return [];
    return parsed
      .map((e: unknown) => (e && typeof e === "object" ? (e as { pid?: unknown }).pid : undefined))
      .filter((p): p is number => typeof p === "number" && Number.isInteger(p) && p > 1);
  } catch {
    return [];
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
