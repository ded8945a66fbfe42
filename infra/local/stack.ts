import { randomBytes, timingSafeEqual } from "node:crypto";
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
  S3Client,
} from "@aws-sdk/client-s3";
import { serve } from "@hono/node-server";
import type { JWK } from "jose";
import { tableDefinition } from "../../functions/adapters/dynamodb/table.ts";
import { type Config, loadConfig } from "../../functions/config.ts";
import { ensureDynamoDbLocal, ensureMinio } from "./binaries.ts";
import { LocalStackError } from "./errors.ts";
import {
  assertPortFree,
  freePort,
  killStaleChildren,
  ServiceGroup,
  startDynamoDbLocal,
  startMinio,
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
  tokens: { admin: string; alice: string; bob: string };
}

/** The functions the local stack drives. */
export interface HangarApp {
  app: { fetch(request: Request): Response | Promise<Response> };
  /** Resolves with what became of each object named by the envelope (logged, not interpreted). */
  handleStorageEvent(body: unknown): Promise<unknown>;
  /** Scheduled housekeeping (hourly in AWS); run on `sweepIntervalMs` when present. */
  sweep?(): Promise<unknown>;
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
  /** Overrides for Hangar's configuration (HANGAR_* variables), applied last. */
  env?: Record<string, string>;
  /**
   * Queue bucket events on disk (`<home>/minio-events`) so none is lost while the receiver is down
   * (default). MinIO polls that queue every 3 s, so `false` trades durability for immediate delivery.
   */
  durableEvents?: boolean;
  /** How often to run `hangar.sweep()`, as the AWS schedule does (default 1 hour; 0 never). */
  sweepIntervalMs?: number;
  /** Forward every line MinIO and DynamoDB Local print to `log`. */
  verboseChildren?: boolean;
  /** Builds the application; defaults to the API, importer and sweeper composed in this process. */
  createHangar?: (config: Config) => HangarApp | Promise<HangarApp>;
}

export interface LocalStack {
  info: LocalInfo;
  signingKey: JWK;
  /** Path of the written local.json. */
  infoFile: string;
  /** Where MinIO delivers bucket events (loopback, bearer-token protected); not in local.json. */
  webhookUrl: string;
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
export const STAGING_PREFIX = "staging/";

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
/** MinIO's event envelopes are small; anything bigger is not one. */
const MAX_EVENT_BYTES = 4 * 1024 * 1024;

/**
 * Starts MinIO, DynamoDB Local and Hangar's API and event receiver on loopback, wires bucket events to
 * the importer, and writes `<home>/local.json` once everything answers.
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

  const signingKey = await loadOrCreateSigningKey(join(home, "jwt-key.json"));
  const group = new ServiceGroup();
  const cleanups: (() => Promise<void>)[] = [];
  const receiver = new EventReceiver(log);
  let stopped: Promise<void> | undefined;

  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      for (const cleanup of cleanups.reverse()) {
        await cleanup().catch((err: unknown) => log(`stop: ${errorMessage(err)}`));
      }
      await receiver.drain(IN_FLIGHT_GRACE_MS);
      await group.stop();
      await rm(infoFile, { force: true });
      await rm(childrenFile, { force: true });
    })();
    return stopped;
  };

  try {
    const webhookServer = await receiver.listen();
    cleanups.push(() => closeServer(webhookServer));
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
    await ensureBucket(s3Endpoint, credentials, bucket);
    await ensureTable(dynamodbEndpoint, credentials, table);

    // The SDK clients built by the composition roots find credentials in the default chain, i.e. here.
    process.env.AWS_ACCESS_KEY_ID = LOCAL_ACCESS_KEY_ID;
    process.env.AWS_SECRET_ACCESS_KEY = LOCAL_SECRET_ACCESS_KEY;
    const config = loadConfig(env);
    const factory = opts.createHangar ?? defaultCreateHangar;
    const hangar = await factory(config);
    receiver.attach(hangar);

    const apiServer = await listenApi(hangar, opts.apiPort);
    cleanups.push(() => closeServer(apiServer));
    const sweepEvery = opts.sweepIntervalMs ?? 3_600_000;
    if (hangar.sweep && sweepEvery > 0) {
      const stopSweeping = scheduleSweeps(hangar.sweep.bind(hangar), sweepEvery, log);
      cleanups.push(stopSweeping);
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
      region: env.AWS_REGION ?? LOCAL_REGION,
      bucket,
      table,
      accessKeyId: LOCAL_ACCESS_KEY_ID,
      secretAccessKey: LOCAL_SECRET_ACCESS_KEY,
      jwtIssuer: config.jwt.issuer,
      jwtAudience: config.jwt.audience,
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

    return { info, signingKey, infoFile, webhookUrl, stop, done };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Runs `sweep` every `everyMs`, never two at once; returns a function that cancels the schedule and
 * waits for a sweep in progress.
 */
function scheduleSweeps(
  sweep: () => Promise<unknown>,
  everyMs: number,
  log: (line: string) => void,
): () => Promise<void> {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (running) return;
    running = sweep()
      .then((report) => log(`sweep: ${JSON.stringify(report ?? null)}`))
      .catch((err: unknown) => log(`sweep failed: ${errorMessage(err)}`))
      .finally(() => {
        running = undefined;
      });
  }, everyMs);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}

async function defaultCreateHangar(config: Config): Promise<HangarApp> {
  const { createInProcessHangar } = await import("./in-process.ts");
  return createInProcessHangar(config);
}

async function ensureBucket(
  endpoint: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
  bucket: string,
): Promise<void> {
  const s3 = new S3Client({ endpoint, region: LOCAL_REGION, forcePathStyle: true, credentials });
  try {
    try {
      await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) throw err;
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    }
    // Put every time: the configuration is ours, and a changed filter must not survive from an old run.
    await s3.send(
      new PutBucketNotificationConfigurationCommand({
        Bucket: bucket,
        NotificationConfiguration: {
          QueueConfigurations: [
            {
              Id: "hangar-import",
              QueueArn: WEBHOOK_QUEUE_ARN,
              Events: ["s3:ObjectCreated:*"],
              Filter: { Key: { FilterRules: [{ Name: "prefix", Value: STAGING_PREFIX }] } },
            },
          ],
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

async function listenApi(hangar: HangarApp, port: number): Promise<Server> {
  return await new Promise<Server>((resolve, reject) => {
    const server = serve({ fetch: (req) => hangar.app.fetch(req), port, hostname: "127.0.0.1" }, () =>
      resolve(server as Server),
    ) as Server;
    server.once("error", (err) =>
      reject(
        new LocalStackError(`cannot serve the API on 127.0.0.1:${port}: ${err.message}`, { cause: err }),
      ),
    );
  });
}

async function closeServer(server: Server): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    // Keep-alive connections would hold close() open for their idle timeout.
    server.closeAllConnections();
  });
}

/**
 * The receiving end of MinIO's webhook target: checks the bearer token, answers 200 at once and hands
 * the envelope to the importer in the background, keeping track of what is still running.
 */
class EventReceiver {
  readonly token = randomBytes(24).toString("hex");
  private readonly inFlight = new Set<Promise<void>>();
  private hangar: HangarApp | undefined;

  constructor(private readonly log: (line: string) => void) {}

  /**
   * Until the app is attached (events queued by MinIO in an earlier run arrive as soon as it starts),
   * deliveries are answered 503 so that MinIO keeps them and retries.
   */
  attach(hangar: HangarApp): void {
    this.hangar = hangar;
  }

  listen(): Promise<Server> {
    const server = createServer((req, res) => this.onRequest(req, res));
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen({ port: 0, host: "127.0.0.1" }, () => resolve(server));
    });
  }

  async drain(timeoutMs: number): Promise<void> {
    if (this.inFlight.size === 0) return;
    this.log(`waiting for ${this.inFlight.size} storage event(s) still being handled`);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((r) => {
      timer = setTimeout(() => r("timeout"), timeoutMs);
    });
    const outcome = await Promise.race([Promise.allSettled([...this.inFlight]), timedOut]);
    clearTimeout(timer);
    if (outcome === "timeout") this.log(`stopping with ${this.inFlight.size} storage event(s) unfinished`);
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
    const hangar = this.hangar;
    if (!hangar) {
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
      res.writeHead(200).end();
      this.dispatch(hangar, body);
    });
  }

  private authorized(header: string | undefined): boolean {
    const expected = Buffer.from(`Bearer ${this.token}`);
    const given = Buffer.from(header ?? "");
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  private dispatch(hangar: HangarApp, body: unknown): void {
    const summary = describeEvent(body);
    this.log(`storage event received: ${summary}`);
    const work = (async () => {
      try {
        const outcome = await hangar.handleStorageEvent(body);
        this.log(`storage event handled: ${summary}: ${JSON.stringify(outcome ?? null)}`);
      } catch (err) {
        this.log(`storage event failed: ${summary}: ${errorMessage(err)}`);
      }
    })();
    this.inFlight.add(work);
    void work.finally(() => this.inFlight.delete(work));
  }
}

/** `s3:ObjectCreated:Put hangar-local/staging/<id>` from a MinIO envelope, for the log. */
function describeEvent(body: unknown): string {
  if (body && typeof body === "object") {
    const { EventName, Key } = body as { EventName?: unknown; Key?: unknown };
    if (typeof EventName === "string" || typeof Key === "string")
      return `${String(EventName)} ${String(Key)}`;
  }
  return "(unrecognised envelope)";
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
