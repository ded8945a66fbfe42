import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";
import {
  DEFAULT_FANOUT_RANGE_BYTES,
  DEFAULT_FANOUT_THRESHOLD,
  DEFAULT_FANOUT_WORKERS,
  DEFAULT_HASH_LINK_BYTES,
} from "./core/fanout/plan.ts";
import { DISK_FORMATS, HASH_ALGOS } from "./core/image/format-names.ts";
import { once } from "./core/once.ts";
import { DEFAULT_IMPORT_POLICY as POLICY } from "./core/policy.ts";

// zod's mini API: the same checks and messages as `zod`, built from functions a bundle keeps only when
// used, so a function that parses nothing but its configuration does not carry all of zod (docs/deploy.md).
// Mini loads no locale of its own; English is the one every message here is written in.
z.config(en());

const list = (fallback: string) =>
  z.pipe(
    z._default(z.string(), fallback),
    z.transform((s) =>
      s
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean),
    ),
  );

const limit = () => z._default(z.coerce.number().check(z.int(), z.minimum(-1)), -1);
const int = (fallback: number) => z._default(z.coerce.number().check(z.int(), z.positive()), fallback);
const nonEmpty = () => z.string().check(z.minLength(1));

/** Every function: where the records and bytes live, and the default per-project limits. */
const StoreEnv = () =>
  z.object({
    HANGAR_TABLE: nonEmpty(),
    HANGAR_BUCKET: nonEmpty(),
    AWS_REGION: z._default(nonEmpty(), "us-east-1"),
    HANGAR_S3_ENDPOINT: z.optional(z.url()),
    /** Endpoint written into presigned links when clients reach storage by another address than the functions. */
    HANGAR_S3_PUBLIC_ENDPOINT: z.optional(z.url()),
    HANGAR_DYNAMODB_ENDPOINT: z.optional(z.url()),
    /** Least part size of the multipart write of stored images (larger for images that need it). */
    HANGAR_PART_SIZE: int(8 * 1024 * 1024),
    /** Default per-project limits (Glance's unified-limit names); -1 is unlimited. Admins override per project. */
    HANGAR_QUOTA_IMAGE_SIZE_TOTAL: limit(),
    HANGAR_QUOTA_IMAGE_STAGE_TOTAL: limit(),
    HANGAR_QUOTA_IMAGE_COUNT_TOTAL: limit(),
    HANGAR_QUOTA_IMAGE_COUNT_UPLOADING: limit(),
    /** EventBridge bus that lifecycle events (image.created, image.activated, …) go to; unset, none are sent. */
    HANGAR_EVENT_BUS: z.optional(nonEmpty()),
    /** EventBridge endpoint (the local stack's stand-in, which appends to events.jsonl); unset in AWS. */
    HANGAR_EVENTS_ENDPOINT: z.optional(z.url()),
  });

/** How the importer holds an image while it imports it (docs/reliability.md). */
const LeaseEnv = () =>
  z.object({
    /** Seconds an import lease lasts unrenewed; a live importer renews it every third of that. */
    HANGAR_IMPORT_LEASE_SECONDS: int(60),
  });

/** The fan-out import of images too large for one invocation (docs/scale.md). */
const FanoutEnv = () =>
  z.object({
    /** Virtual size (bytes) above which the importer hands an image to the fan-out state machine. */
    HANGAR_FANOUT_THRESHOLD: int(DEFAULT_FANOUT_THRESHOLD),
    /** Bytes of raw output one worker converts (rounded up to a multiple of HANGAR_PART_SIZE). */
    HANGAR_FANOUT_RANGE_BYTES: int(DEFAULT_FANOUT_RANGE_BYTES),
    /** Ranges converted at once (Step Functions runs at most 40 iterations of an inline Map at once). */
    HANGAR_FANOUT_WORKERS: z.pipe(int(DEFAULT_FANOUT_WORKERS), z.number().check(z.maximum(1000))),
    /** Bytes of the stored image one link of the hash chain reads. */
    HANGAR_FANOUT_HASH_LINK_BYTES: int(DEFAULT_HASH_LINK_BYTES),
    HANGAR_PART_SIZE: int(8 * 1024 * 1024),
    /** The state machine the importer starts (its ARN); unset, nothing fans out. */
    HANGAR_FANOUT_STATE_MACHINE: z.optional(nonEmpty()),
    /** Step Functions endpoint (the local stack's stand-in); unset in AWS. */
    HANGAR_STEPFUNCTIONS_ENDPOINT: z.optional(z.url()),
  });

/** The operator's import policy: what the importer enforces and the API shows (`/v2/info/import`). */
const PolicyEnv = () =>
  z.object({
    HANGAR_OS_HASH_ALGO: z._default(z.enum(HASH_ALGOS), POLICY.osHashAlgo),
    HANGAR_PREFERRED_FORMAT: z._default(z.enum(DISK_FORMATS), POLICY.preferredFormat),
    HANGAR_ACCEPTED_FORMATS: z.pipe(
      list(POLICY.acceptedFormats.join(",")),
      z.array(z.enum(DISK_FORMATS)).check(z.minLength(1)),
    ),
    /** Largest virtual size accepted (bytes). */
    HANGAR_MAX_VIRTUAL_SIZE: int(POLICY.maxVirtualSize),
    /** Largest ratio of decompressed to compressed bytes for gzip-wrapped uploads. */
    HANGAR_MAX_GZIP_RATIO: int(POLICY.maxGzipRatio),
  });

/** Upload and download links (the API) and how long an idle upload is kept (API and sweeper). */
const UploadsEnv = () =>
  z.object({
    /** Seconds a presigned upload or download link stays valid. */
    HANGAR_UPLOAD_URL_TTL: int(3600),
    HANGAR_DOWNLOAD_URL_TTL: int(300),
    /** Declared upload sizes above this many bytes get a multipart plan (always above 5 GiB). */
    HANGAR_MULTIPART_THRESHOLD: int(64 * 1024 * 1024),
    /** Smallest part size a multipart plan offers; S3 allows 5 MiB to 5 GiB. */
    HANGAR_MULTIPART_PART_SIZE: z.pipe(
      int(16 * 1024 * 1024),
      z.number().check(z.minimum(5 * 1024 * 1024), z.maximum(5 * 1024 ** 3)),
    ),
    /** Seconds a presigned part link stays valid; clients ask again for parts they have not sent yet. */
    HANGAR_PART_URL_TTL: int(900),
    /** Seconds without a new part (or since a staged object arrived) after which the sweeper removes an upload. */
    HANGAR_UPLOAD_ABANDON_AFTER: int(24 * 3600),
  });

/** Housekeeping (the sweeper). */
const SweepEnv = () =>
  z.object({
    HANGAR_UPLOAD_ABANDON_AFTER: int(24 * 3600),
    /** Seconds after an import lease expired before the sweeper kills the stalled import. */
    HANGAR_STALLED_IMPORT_GRACE: int(3600),
    /** The importer function the re-drive hands stale uploads to (asynchronous invocation); unset, no re-drive. */
    HANGAR_IMPORTER_FUNCTION: z.optional(nonEmpty()),
    /** Seconds an upload may sit staged beside a `queued` image before the re-drive counts its event lost. */
    HANGAR_REDRIVE_QUEUED_AFTER: int(60),
    /** Lambda API endpoint (the local stack's stand-in for Lambda); unset in AWS. */
    HANGAR_LAMBDA_ENDPOINT: z.optional(z.url()),
  });

/** JWT verification (the API): a JWKS URL (AWS) or a public JWK as JSON (local stack). */
const JwtEnv = () =>
  z
    .object({
      HANGAR_JWT_ISSUER: nonEmpty(),
      HANGAR_JWT_AUDIENCE: z._default(nonEmpty(), "hangar"),
      HANGAR_JWT_JWKS_URL: z.optional(z.url()),
      HANGAR_JWT_PUBLIC_JWK: z.optional(z.string()),
    })
    .check(
      z.refine((e) => Boolean(e.HANGAR_JWT_JWKS_URL || e.HANGAR_JWT_PUBLIC_JWK), {
        error: "set HANGAR_JWT_JWKS_URL or HANGAR_JWT_PUBLIC_JWK",
      }),
    );

/** web-download: what the API promises and the web-download function enforces. */
const WebDownloadEnv = () =>
  z.object({
    /** Largest body fetched (bytes, default 64 GiB) and the whole fetch's time limit (seconds). */
    HANGAR_WEB_DOWNLOAD_MAX_BYTES: int(64 * 1024 ** 3),
    HANGAR_WEB_DOWNLOAD_TIMEOUT: int(840),
    /** Test-only: "1" lets web-download fetch from loopback (the integration harness's source server). */
    HANGAR_WEB_DOWNLOAD_ALLOW_LOOPBACK: z._default(z.enum(["0", "1"]), "0"),
    /** The function that runs web-download jobs, invoked asynchronously through the Lambda API. */
    HANGAR_WEB_DOWNLOAD_FUNCTION: z.optional(nonEmpty()),
    /** Lambda API endpoint (the local stack's stand-in for Lambda); unset in AWS. */
    HANGAR_LAMBDA_ENDPOINT: z.optional(z.url()),
  });

export class ConfigError extends Error {
  override name = "ConfigError";
}

type Env = Record<string, string | undefined>;

/**
 * A slice of the configuration: its environment schema, piped into the shape the code reads. Each slice's
 * type is derived from its schema (`SliceOf`), so a setting is declared once.
 */
const slice = <E extends z.ZodMiniType<Record<string, unknown>>, T extends object>(
  env: () => E,
  shape: (e: z.output<E>) => T,
) =>
  // Built when a function first reads the slice: a function never builds the schemas of settings it
  // does not read (the importer's init builds no JWT or upload-link schema).
  once(() =>
    z.pipe(
      env(),
      z.transform((e) => Object.freeze(shape(e))),
    ),
  );
type SliceOf<S extends () => z.ZodMiniType> = Readonly<z.output<ReturnType<S>>>;

const Store = slice(StoreEnv, (e) => ({
  table: e.HANGAR_TABLE,
  bucket: e.HANGAR_BUCKET,
  region: e.AWS_REGION,
  s3Endpoint: e.HANGAR_S3_ENDPOINT,
  s3PublicEndpoint: e.HANGAR_S3_PUBLIC_ENDPOINT,
  dynamodbEndpoint: e.HANGAR_DYNAMODB_ENDPOINT,
  partSize: e.HANGAR_PART_SIZE,
  /** Default quota limits per project (-1: unlimited). */
  quotaDefaults: Object.freeze({
    image_size_total: e.HANGAR_QUOTA_IMAGE_SIZE_TOTAL,
    image_stage_total: e.HANGAR_QUOTA_IMAGE_STAGE_TOTAL,
    image_count_total: e.HANGAR_QUOTA_IMAGE_COUNT_TOTAL,
    image_count_uploading: e.HANGAR_QUOTA_IMAGE_COUNT_UPLOADING,
  }),
  /** Where lifecycle events go; undefined, they are not published. */
  events: e.HANGAR_EVENT_BUS
    ? Object.freeze({ bus: e.HANGAR_EVENT_BUS, endpoint: e.HANGAR_EVENTS_ENDPOINT })
    : undefined,
}));

const Lease = slice(LeaseEnv, (e) => ({ importLeaseSeconds: e.HANGAR_IMPORT_LEASE_SECONDS }));

const Fanout = slice(FanoutEnv, (e) => ({
  fanout: Object.freeze({
    threshold: e.HANGAR_FANOUT_THRESHOLD,
    // Ranges are runs of whole parts of the stored image.
    rangeBytes: Math.ceil(e.HANGAR_FANOUT_RANGE_BYTES / e.HANGAR_PART_SIZE) * e.HANGAR_PART_SIZE,
    workers: e.HANGAR_FANOUT_WORKERS,
    hashLinkBytes: e.HANGAR_FANOUT_HASH_LINK_BYTES,
    stateMachineArn: e.HANGAR_FANOUT_STATE_MACHINE,
    stepFunctionsEndpoint: e.HANGAR_STEPFUNCTIONS_ENDPOINT,
  }),
}));

const Policy = slice(PolicyEnv, (e) => ({
  osHashAlgo: e.HANGAR_OS_HASH_ALGO,
  preferredFormat: e.HANGAR_PREFERRED_FORMAT,
  acceptedFormats: Object.freeze([...e.HANGAR_ACCEPTED_FORMATS]) as readonly (typeof DISK_FORMATS)[number][],
  maxVirtualSize: e.HANGAR_MAX_VIRTUAL_SIZE,
  maxGzipRatio: e.HANGAR_MAX_GZIP_RATIO,
}));

const Uploads = slice(UploadsEnv, (e) => ({
  uploadUrlTtlSeconds: e.HANGAR_UPLOAD_URL_TTL,
  downloadUrlTtlSeconds: e.HANGAR_DOWNLOAD_URL_TTL,
  multipartThreshold: e.HANGAR_MULTIPART_THRESHOLD,
  multipartPartSize: e.HANGAR_MULTIPART_PART_SIZE,
  partUrlTtlSeconds: e.HANGAR_PART_URL_TTL,
  abandonUploadsAfterSeconds: e.HANGAR_UPLOAD_ABANDON_AFTER,
}));

const Sweep = slice(SweepEnv, (e) => ({
  abandonUploadsAfterSeconds: e.HANGAR_UPLOAD_ABANDON_AFTER,
  stalledImportGraceSeconds: e.HANGAR_STALLED_IMPORT_GRACE,
  redrive: Object.freeze({
    importerFunction: e.HANGAR_IMPORTER_FUNCTION,
    queuedAfterSeconds: e.HANGAR_REDRIVE_QUEUED_AFTER,
    lambdaEndpoint: e.HANGAR_LAMBDA_ENDPOINT,
  }),
}));

const Jwt = slice(JwtEnv, (e) => ({
  jwt: Object.freeze({
    issuer: e.HANGAR_JWT_ISSUER,
    audience: e.HANGAR_JWT_AUDIENCE,
    jwksUrl: e.HANGAR_JWT_JWKS_URL,
    publicJwk: e.HANGAR_JWT_PUBLIC_JWK,
  }),
}));

const WebDownload = slice(WebDownloadEnv, (e) => ({
  webDownload: Object.freeze({
    maxBytes: e.HANGAR_WEB_DOWNLOAD_MAX_BYTES,
    timeoutSeconds: e.HANGAR_WEB_DOWNLOAD_TIMEOUT,
    allowLoopback: e.HANGAR_WEB_DOWNLOAD_ALLOW_LOOPBACK === "1",
    functionName: e.HANGAR_WEB_DOWNLOAD_FUNCTION,
    lambdaEndpoint: e.HANGAR_LAMBDA_ENDPOINT,
  }),
}));

export type StoreConfig = SliceOf<typeof Store>;
export type LeaseConfig = SliceOf<typeof Lease>;
export type PolicyConfig = SliceOf<typeof Policy>;
export type FanoutConfig = SliceOf<typeof Fanout>;
export type UploadsConfig = SliceOf<typeof Uploads>;
export type SweepConfig = SliceOf<typeof Sweep>;
export type JwtConfig = SliceOf<typeof Jwt>;
export type WebDownloadConfig = SliceOf<typeof WebDownload>;

/** What each function reads: a slice of the environment, nothing more (the importer needs no JWT settings). */
export type ApiConfig = StoreConfig & PolicyConfig & UploadsConfig & JwtConfig & WebDownloadConfig;
export type ImporterConfig = StoreConfig & PolicyConfig & LeaseConfig & FanoutConfig;
/** The fan-out's three functions (control, worker, hash). */
export type FanoutFunctionConfig = StoreConfig & PolicyConfig & FanoutConfig;
export type SweeperConfig = StoreConfig & SweepConfig;
export type ReconcilerConfig = StoreConfig;
export type WebDownloadFunctionConfig = StoreConfig & WebDownloadConfig;
/** Every setting (scripts and tests that build several functions' pieces). */
export type Config = ApiConfig & SweeperConfig & ImporterConfig & FanoutFunctionConfig;

/** One slice read from `env`; the error names every bad or missing variable. */
function parse<S extends z.ZodMiniType>(schema: () => S, env: Env): z.output<S> {
  const parsed = schema().safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues
      .map((i) => (i.path.length ? `${i.path.join(".")}: ${i.message}` : i.message))
      .join("; ");
    throw new ConfigError(`invalid Hangar configuration: ${problems}`);
  }
  return parsed.data;
}

const store = (env: Env) => parse(Store, env);
const lease = (env: Env) => parse(Lease, env);
const policy = (env: Env) => parse(Policy, env);
const fanout = (env: Env) => parse(Fanout, env);
const uploads = (env: Env) => parse(Uploads, env);
const sweep = (env: Env) => parse(Sweep, env);
const jwt = (env: Env) => parse(Jwt, env);
const webDownload = (env: Env) => parse(WebDownload, env);

/** Reads the slices `parts` from an environment map, once; the error names every bad or missing variable. */
function load<T>(env: Env, ...parts: ((env: Env) => object)[]): T {
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  for (const part of parts) {
    try {
      Object.assign(out, part(env));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(err.message.replace(/^invalid Hangar configuration: /, ""));
    }
  }
  if (problems.length > 0) throw new ConfigError(`invalid Hangar configuration: ${problems.join("; ")}`);
  return Object.freeze(out) as T;
}

export const loadApiConfig = (env: Env): ApiConfig => load(env, store, policy, uploads, jwt, webDownload);
export const loadImporterConfig = (env: Env): ImporterConfig => load(env, store, policy, lease, fanout);
export const loadFanoutConfig = (env: Env): FanoutFunctionConfig => load(env, store, policy, fanout);
export const loadSweeperConfig = (env: Env): SweeperConfig => load(env, store, sweep);
export const loadReconcilerConfig = (env: Env): ReconcilerConfig => load(env, store);
export const loadWebDownloadConfig = (env: Env): WebDownloadFunctionConfig => load(env, store, webDownload);
/** Every slice at once (scripts and tests that compose several functions' pieces). */
export const loadConfig = (env: Env): Config =>
  load(env, store, policy, lease, fanout, uploads, sweep, jwt, webDownload);
export const loadJwtConfig = (env: Env): JwtConfig => load(env, jwt);
