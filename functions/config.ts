import {
  DEFAULT_FANOUT_RANGE_BYTES,
  DEFAULT_FANOUT_THRESHOLD,
  DEFAULT_FANOUT_WORKERS,
  DEFAULT_HASH_LINK_BYTES,
} from "./core/fanout/plan.ts";
import { DISK_FORMATS, HASH_ALGOS } from "./core/image/format-names.ts";
import { DEFAULT_IMPORT_POLICY as POLICY } from "./core/policy.ts";

// The environment is read by a few small readers rather than zod: each function reads its configuration
// in its init, and zod's schemas for it (about 150 schemas and checks for the api) and their first parse
// were a fifth of the JavaScript the api's init ran (docs/deploy.md). The readers accept what zod's mini
// API accepted, and their messages are zod's English ones, word for word (test/unit/config.test.ts).

/** One problem with one variable; `fatal` stops the variable's later checks, as a type error does in zod. */
interface Issue {
  path: (string | number)[];
  message: string;
  fatal?: boolean;
}

/** Reads one value (a variable, or a list item), pushing what is wrong with it into `issues`. */
type Reader<T> = (raw: unknown, issues: Issue[]) => T;

const typeName = (v: unknown): string =>
  v === null
    ? "null"
    : Array.isArray(v)
      ? "array"
      : typeof v === "number"
        ? Number.isNaN(v)
          ? "NaN"
          : String(v)
        : typeof v;

const string: Reader<string> = (raw, issues) => {
  if (typeof raw !== "string") {
    issues.push({
      path: [],
      message: `Invalid input: expected string, received ${typeName(raw)}`,
      fatal: true,
    });
  }
  return raw as string;
};

const nonEmpty: Reader<string> = (raw, issues) => {
  const s = string(raw, issues);
  if (typeof s === "string" && s.length < 1) {
    issues.push({ path: [], message: "Too small: expected string to have >=1 characters" });
  }
  return s;
};

/** A URL as `new URL` parses it, around whitespace; tabs and newlines, which the parser drops, dropped. */
const url: Reader<string> = (raw, issues) => {
  const s = string(raw, issues);
  if (typeof s !== "string") return s;
  const trimmed = s.trim();
  if (!URL.canParse(trimmed)) {
    issues.push({ path: [], message: "Invalid URL" });
    return s;
  }
  return trimmed.replace(/[\t\n\r]/g, "");
};

const optional =
  <T>(read: Reader<T>): Reader<T | undefined> =>
  (raw, issues) =>
    raw === undefined ? undefined : read(raw, issues);

const withDefault =
  <T>(read: Reader<T>, fallback: T): Reader<T> =>
  (raw, issues) =>
    raw === undefined ? fallback : read(raw, issues);

const oneOf =
  <const V extends string>(values: readonly V[]): Reader<V> =>
  (raw, issues) => {
    if (!values.includes(raw as V)) {
      issues.push({
        path: [],
        message:
          values.length === 1
            ? `Invalid input: expected ${JSON.stringify(values[0])}`
            : `Invalid option: expected one of ${values.map((v) => JSON.stringify(v)).join("|")}`,
        fatal: true,
      });
    }
    return raw as V;
  };

interface Bounds {
  min?: number;
  /** `min` itself is refused. */
  exclusiveMin?: boolean;
  max?: number;
}

/** `Number(raw)`, finite, whole and within `bounds`. */
const integer =
  (bounds: Bounds): Reader<number> =>
  (raw, issues) => {
    const n = Number(raw);
    if (!Number.isFinite(n)) {
      issues.push({
        path: [],
        message: `Invalid input: expected number, received ${typeName(n)}`,
        fatal: true,
      });
      return n;
    }
    if (!Number.isInteger(n)) {
      issues.push({ path: [], message: "Invalid input: expected int, received number", fatal: true });
      return n;
    }
    if (n > Number.MAX_SAFE_INTEGER) {
      issues.push({ path: [], message: `Too big: expected int to be <=${Number.MAX_SAFE_INTEGER}` });
    } else if (n < Number.MIN_SAFE_INTEGER) {
      issues.push({ path: [], message: `Too small: expected int to be >=${Number.MIN_SAFE_INTEGER}` });
    }
    return within(n, bounds, issues);
  };

function within(n: number, { min, exclusiveMin, max }: Bounds, issues: Issue[]): number {
  if (min !== undefined && (exclusiveMin ? n <= min : n < min)) {
    issues.push({ path: [], message: `Too small: expected number to be ${exclusiveMin ? ">" : ">="}${min}` });
  }
  if (max !== undefined && n > max) {
    issues.push({ path: [], message: `Too big: expected number to be <=${max}` });
  }
  return n;
}

/** A whole number of at least -1 (a quota: -1 is unlimited), -1 when unset. */
const limit = () => withDefault(integer({ min: -1 }), -1);
/** A positive whole number, `fallback` when unset; checked against `bounds` once it is one. */
const int = (fallback: number, bounds: Bounds = {}): Reader<number> => {
  const positive = withDefault(integer({ min: 0, exclusiveMin: true }), fallback);
  return (raw, issues) => {
    const own: Issue[] = [];
    const n = positive(raw, own);
    issues.push(...own);
    return own.length > 0 ? n : within(n, bounds, issues);
  };
};

/** A comma-separated list of `values` (blanks around and between items ignored), at least one. */
const list =
  <const V extends string>(values: readonly V[], fallback: string): Reader<V[]> =>
  (raw, issues) => {
    const items = withDefault(string, fallback)(raw, issues);
    if (typeof items !== "string") return [];
    const out = items
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean);
    const item = oneOf(values);
    const own: Issue[] = [];
    for (const [i, x] of out.entries()) {
      const at = own.length;
      item(x, own);
      for (const issue of own.slice(at)) issue.path.unshift(i);
    }
    if (own.length === 0 && out.length < 1) {
      own.push({ path: [], message: "Too small: expected array to have >=1 items" });
    }
    issues.push(...own);
    return out as V[];
  };

type Shape = Record<string, Reader<unknown>>;
type Read<S extends Shape> = { [K in keyof S]: ReturnType<S[K]> };

/** Reads every variable of `shape` from `env`, in order; each issue's path starts with its variable. */
function readShape<S extends Shape>(shape: S, env: Env, issues: Issue[]): Read<S> {
  const out: Record<string, unknown> = {};
  for (const [key, read] of Object.entries(shape)) {
    const own: Issue[] = [];
    out[key] = read(env[key], own);
    for (const issue of own) issues.push({ ...issue, path: [key, ...issue.path] });
  }
  return out as Read<S>;
}

/** Every function: where the records and bytes live, and the default per-project limits. */
const StoreEnv = {
  HANGAR_TABLE: nonEmpty,
  HANGAR_BUCKET: nonEmpty,
  AWS_REGION: withDefault(nonEmpty, "us-east-1"),
  HANGAR_S3_ENDPOINT: optional(url),
  /** Endpoint written into presigned links when clients reach storage by another address than the functions. */
  HANGAR_S3_PUBLIC_ENDPOINT: optional(url),
  HANGAR_DYNAMODB_ENDPOINT: optional(url),
  /** Least part size of the multipart write of stored images (larger for images that need it). */
  HANGAR_PART_SIZE: int(8 * 1024 * 1024),
  /** Default per-project limits (Glance's unified-limit names); -1 is unlimited. Admins override per project. */
  HANGAR_QUOTA_IMAGE_SIZE_TOTAL: limit(),
  HANGAR_QUOTA_IMAGE_STAGE_TOTAL: limit(),
  HANGAR_QUOTA_IMAGE_COUNT_TOTAL: limit(),
  HANGAR_QUOTA_IMAGE_COUNT_UPLOADING: limit(),
  /** EventBridge bus that lifecycle events (image.created, image.activated, …) go to; unset, none are sent. */
  HANGAR_EVENT_BUS: optional(nonEmpty),
  /** EventBridge endpoint (the local stack's stand-in, which appends to events.jsonl); unset in AWS. */
  HANGAR_EVENTS_ENDPOINT: optional(url),
};

/** How the importer holds an image while it imports it (docs/reliability.md). */
const LeaseEnv = {
  /** Seconds an import lease lasts unrenewed; a live importer renews it every third of that. */
  HANGAR_IMPORT_LEASE_SECONDS: int(60),
};

/** The fan-out import of images too large for one invocation (docs/scale.md). */
const FanoutEnv = {
  /** Virtual size (bytes) above which the importer hands an image to the fan-out state machine. */
  HANGAR_FANOUT_THRESHOLD: int(DEFAULT_FANOUT_THRESHOLD),
  /** Bytes of raw output one worker converts (rounded up to a multiple of HANGAR_PART_SIZE). */
  HANGAR_FANOUT_RANGE_BYTES: int(DEFAULT_FANOUT_RANGE_BYTES),
  /** Ranges converted at once (Step Functions runs at most 40 iterations of an inline Map at once). */
  HANGAR_FANOUT_WORKERS: int(DEFAULT_FANOUT_WORKERS, { max: 1000 }),
  /** Bytes of the stored image one link of the hash chain reads. */
  HANGAR_FANOUT_HASH_LINK_BYTES: int(DEFAULT_HASH_LINK_BYTES),
  HANGAR_PART_SIZE: int(8 * 1024 * 1024),
  /** The state machine the importer starts (its ARN); unset, nothing fans out. */
  HANGAR_FANOUT_STATE_MACHINE: optional(nonEmpty),
  /** Step Functions endpoint (the local stack's stand-in); unset in AWS. */
  HANGAR_STEPFUNCTIONS_ENDPOINT: optional(url),
};

/** The operator's import policy: what the importer enforces and the API shows (`/v2/info/import`). */
const PolicyEnv = {
  HANGAR_OS_HASH_ALGO: withDefault(oneOf(HASH_ALGOS), POLICY.osHashAlgo),
  HANGAR_PREFERRED_FORMAT: withDefault(oneOf(DISK_FORMATS), POLICY.preferredFormat),
  HANGAR_ACCEPTED_FORMATS: list(DISK_FORMATS, POLICY.acceptedFormats.join(",")),
  /** Largest virtual size accepted (bytes). */
  HANGAR_MAX_VIRTUAL_SIZE: int(POLICY.maxVirtualSize),
  /** Largest ratio of decompressed to compressed bytes for gzip-wrapped uploads. */
  HANGAR_MAX_GZIP_RATIO: int(POLICY.maxGzipRatio),
};

/** Upload and download links (the API) and how long an idle upload is kept (API and sweeper). */
const UploadsEnv = {
  /** Seconds a presigned upload or download link stays valid. */
  HANGAR_UPLOAD_URL_TTL: int(3600),
  HANGAR_DOWNLOAD_URL_TTL: int(300),
  /** Declared upload sizes above this many bytes get a multipart plan (always above 5 GiB). */
  HANGAR_MULTIPART_THRESHOLD: int(64 * 1024 * 1024),
  /** Smallest part size a multipart plan offers; S3 allows 5 MiB to 5 GiB. */
  HANGAR_MULTIPART_PART_SIZE: int(16 * 1024 * 1024, { min: 5 * 1024 * 1024, max: 5 * 1024 ** 3 }),
  /** Seconds a presigned part link stays valid; clients ask again for parts they have not sent yet. */
  HANGAR_PART_URL_TTL: int(900),
  /** Seconds without a new part (or since a staged object arrived) after which the sweeper removes an upload. */
  HANGAR_UPLOAD_ABANDON_AFTER: int(24 * 3600),
};

/** Housekeeping (the sweeper). */
const SweepEnv = {
  HANGAR_UPLOAD_ABANDON_AFTER: int(24 * 3600),
  /** Seconds after an import lease expired before the sweeper kills the stalled import. */
  HANGAR_STALLED_IMPORT_GRACE: int(3600),
  /** The importer function the re-drive hands stale uploads to (asynchronous invocation); unset, no re-drive. */
  HANGAR_IMPORTER_FUNCTION: optional(nonEmpty),
  /** Seconds an upload may sit staged beside a `queued` image before the re-drive counts its event lost. */
  HANGAR_REDRIVE_QUEUED_AFTER: int(60),
  /** Lambda API endpoint (the local stack's stand-in for Lambda); unset in AWS. */
  HANGAR_LAMBDA_ENDPOINT: optional(url),
};

/** JWT verification (the API): a JWKS URL (AWS) or a public JWK as JSON (local stack). */
const JwtEnv = {
  HANGAR_JWT_ISSUER: nonEmpty,
  HANGAR_JWT_AUDIENCE: withDefault(nonEmpty, "hangar"),
  HANGAR_JWT_JWKS_URL: optional(url),
  HANGAR_JWT_PUBLIC_JWK: optional(string),
};
const jwtKeys = (e: Read<typeof JwtEnv>) =>
  e.HANGAR_JWT_JWKS_URL || e.HANGAR_JWT_PUBLIC_JWK
    ? undefined
    : "set HANGAR_JWT_JWKS_URL or HANGAR_JWT_PUBLIC_JWK";

/** web-download: what the API promises and the web-download function enforces. */
const WebDownloadEnv = {
  /** Largest body fetched (bytes, default 64 GiB) and the whole fetch's time limit (seconds). */
  HANGAR_WEB_DOWNLOAD_MAX_BYTES: int(64 * 1024 ** 3),
  HANGAR_WEB_DOWNLOAD_TIMEOUT: int(840),
  /** Test-only: "1" lets web-download fetch from loopback (the integration harness's source server). */
  HANGAR_WEB_DOWNLOAD_ALLOW_LOOPBACK: withDefault(oneOf(["0", "1"]), "0"),
  /** The function that runs web-download jobs, invoked asynchronously through the Lambda API. */
  HANGAR_WEB_DOWNLOAD_FUNCTION: optional(nonEmpty),
  /** Lambda API endpoint (the local stack's stand-in for Lambda); unset in AWS. */
  HANGAR_LAMBDA_ENDPOINT: optional(url),
};

export class ConfigError extends Error {
  override name = "ConfigError";
}

type Env = Record<string, string | undefined>;

/**
 * A slice of the configuration: the variables it reads (`env`, with a `check` of them together), turned
 * into the shape the code reads. Each slice's type is derived from its readers (`SliceOf`), so a setting
 * is declared once.
 */
const slice =
  <S extends Shape, T extends object>(
    env: S,
    shape: (e: Read<S>) => T,
    check: (e: Read<S>) => string | undefined = () => undefined,
  ) =>
  (vars: Env): T => {
    const issues: Issue[] = [];
    const e = readShape(env, vars, issues);
    // As zod: the check of the whole runs unless a variable is missing or of the wrong kind.
    const whole = issues.some((i) => i.fatal) ? undefined : check(e);
    if (whole !== undefined) issues.push({ path: [], message: whole });
    if (issues.length > 0) {
      const problems = issues
        .map((i) => (i.path.length ? `${i.path.join(".")}: ${i.message}` : i.message))
        .join("; ");
      throw new ConfigError(`invalid Hangar configuration: ${problems}`);
    }
    return Object.freeze(shape(e));
  };
type SliceOf<S extends (env: Env) => object> = Readonly<ReturnType<S>>;

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

const Jwt = slice(
  JwtEnv,
  (e) => ({
    jwt: Object.freeze({
      issuer: e.HANGAR_JWT_ISSUER,
      audience: e.HANGAR_JWT_AUDIENCE,
      jwksUrl: e.HANGAR_JWT_JWKS_URL,
      publicJwk: e.HANGAR_JWT_PUBLIC_JWK,
    }),
  }),
  jwtKeys,
);

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

export const loadApiConfig = (env: Env): ApiConfig => load(env, Store, Policy, Uploads, Jwt, WebDownload);
export const loadImporterConfig = (env: Env): ImporterConfig => load(env, Store, Policy, Lease, Fanout);
export const loadFanoutConfig = (env: Env): FanoutFunctionConfig => load(env, Store, Policy, Fanout);
export const loadSweeperConfig = (env: Env): SweeperConfig => load(env, Store, Sweep);
export const loadReconcilerConfig = (env: Env): ReconcilerConfig => load(env, Store);
export const loadWebDownloadConfig = (env: Env): WebDownloadFunctionConfig => load(env, Store, WebDownload);
/** Every slice at once (scripts and tests that compose several functions' pieces). */
export const loadConfig = (env: Env): Config =>
  load(env, Store, Policy, Lease, Fanout, Uploads, Sweep, Jwt, WebDownload);
export const loadJwtConfig = (env: Env): JwtConfig => load(env, Jwt);
