import { describe, expect, it } from "vitest";
import {
  ConfigError,
  loadApiConfig,
  loadConfig,
  loadImporterConfig,
  loadJwtConfig,
  loadReconcilerConfig,
  loadSweeperConfig,
  loadWebDownloadConfig,
} from "../../functions/config.ts";

// What each function's configuration accepts, its defaults, and that every refusal names the variable.
const STORE = { HANGAR_TABLE: "images", HANGAR_BUCKET: "bytes" };
const JWT = { HANGAR_JWT_ISSUER: "https://issuer.example/", HANGAR_JWT_PUBLIC_JWK: "{}" };

function refusal(load: () => unknown): string {
  try {
    load();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error("the configuration was accepted");
}

describe("configuration", () => {
  it("gives each setting its default", () => {
    const config = loadConfig({ ...STORE, ...JWT });
    expect(config).toEqual({
      table: "images",
      bucket: "bytes",
      region: "us-east-1",
      s3Endpoint: undefined,
      s3PublicEndpoint: undefined,
      dynamodbEndpoint: undefined,
      partSize: 8 * 1024 * 1024,
      quotaDefaults: {
        image_size_total: -1,
        image_stage_total: -1,
        image_count_total: -1,
        image_count_uploading: -1,
      },
      osHashAlgo: "sha512",
      preferredFormat: "raw",
      acceptedFormats: ["raw", "iso"],
      maxVirtualSize: 2 ** 40,
      maxGzipRatio: 64,
      importLeaseSeconds: 60,
      uploadUrlTtlSeconds: 3600,
      downloadUrlTtlSeconds: 300,
      multipartThreshold: 64 * 1024 * 1024,
      multipartPartSize: 16 * 1024 * 1024,
      partUrlTtlSeconds: 900,
      abandonUploadsAfterSeconds: 24 * 3600,
      stalledImportGraceSeconds: 3600,
      redrive: { importerFunction: undefined, queuedAfterSeconds: 60, lambdaEndpoint: undefined },
      jwt: { issuer: "https://issuer.example/", audience: "hangar", jwksUrl: undefined, publicJwk: "{}" },
      fanout: {
        threshold: 27 * 1024 ** 3,
        rangeBytes: 4 * 1024 ** 3,
        workers: 40,
        hashLinkBytes: 50 * 1024 ** 3,
        stateMachineArn: undefined,
        stepFunctionsEndpoint: undefined,
      },
      webDownload: {
        maxBytes: 64 * 1024 ** 3,
        timeoutSeconds: 840,
        allowLoopback: false,
        functionName: undefined,
        lambdaEndpoint: undefined,
      },
    });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.quotaDefaults)).toBe(true);
    expect(Object.isFrozen(config.acceptedFormats)).toBe(true);
  });

  it("reads every variable it is given, coercing numbers and splitting lists", () => {
    const config = loadConfig({
      ...STORE,
      ...JWT,
      AWS_REGION: "eu-west-1",
      HANGAR_S3_ENDPOINT: "http://127.0.0.1:9000",
      HANGAR_S3_PUBLIC_ENDPOINT: "http://storage.example:9000",
      HANGAR_DYNAMODB_ENDPOINT: "http://127.0.0.1:8000",
      HANGAR_PART_SIZE: "1e7",
      HANGAR_QUOTA_IMAGE_SIZE_TOTAL: "0",
      HANGAR_QUOTA_IMAGE_COUNT_TOTAL: " 0x10 ",
      HANGAR_OS_HASH_ALGO: "sha256",
      HANGAR_PREFERRED_FORMAT: "qcow2",
      HANGAR_ACCEPTED_FORMATS: " qcow2, raw ,,",
      HANGAR_MULTIPART_PART_SIZE: String(5 * 1024 * 1024),
      HANGAR_UPLOAD_ABANDON_AFTER: "60",
      HANGAR_JWT_AUDIENCE: "glance",
      HANGAR_JWT_JWKS_URL: "https://issuer.example/jwks.json",
      HANGAR_WEB_DOWNLOAD_ALLOW_LOOPBACK: "1",
      HANGAR_WEB_DOWNLOAD_FUNCTION: "hangar-web-download",
      HANGAR_LAMBDA_ENDPOINT: "http://127.0.0.1:3002",
      HANGAR_FANOUT_THRESHOLD: "1048576",
      HANGAR_FANOUT_RANGE_BYTES: "25000000",
      HANGAR_FANOUT_WORKERS: "3",
      HANGAR_FANOUT_HASH_LINK_BYTES: "7340032",
      HANGAR_FANOUT_STATE_MACHINE: "arn:aws:states:eu-west-1:123456789012:stateMachine:hangar-fanout",
      HANGAR_STEPFUNCTIONS_ENDPOINT: "http://127.0.0.1:3003",
    });
    expect(config).toMatchObject({
      // Rounded up to whole parts of 10,000,000 bytes.
      fanout: {
        threshold: 1048576,
        rangeBytes: 30_000_000,
        workers: 3,
        hashLinkBytes: 7340032,
        stateMachineArn: "arn:aws:states:eu-west-1:123456789012:stateMachine:hangar-fanout",
        stepFunctionsEndpoint: "http://127.0.0.1:3003",
      },
      region: "eu-west-1",
      s3Endpoint: "http://127.0.0.1:9000",
      s3PublicEndpoint: "http://storage.example:9000",
      dynamodbEndpoint: "http://127.0.0.1:8000",
      partSize: 10_000_000,
      quotaDefaults: { image_size_total: 0, image_count_total: 16 },
      osHashAlgo: "sha256",
      preferredFormat: "qcow2",
      acceptedFormats: ["qcow2", "raw"],
      multipartPartSize: 5 * 1024 * 1024,
      abandonUploadsAfterSeconds: 60,
      jwt: { audience: "glance", jwksUrl: "https://issuer.example/jwks.json" },
      webDownload: {
        allowLoopback: true,
        functionName: "hangar-web-download",
        lambdaEndpoint: "http://127.0.0.1:3002",
      },
    });
  });

  it("names every bad or missing variable in one error", () => {
    const message = refusal(() =>
      loadConfig({
        ...JWT,
        HANGAR_TABLE: "",
        HANGAR_S3_ENDPOINT: "not a url",
        HANGAR_PART_SIZE: "abc",
        HANGAR_QUOTA_IMAGE_SIZE_TOTAL: "-2",
        HANGAR_OS_HASH_ALGO: "md5",
        HANGAR_ACCEPTED_FORMATS: "raw,floppy",
        HANGAR_UPLOAD_URL_TTL: "0",
        HANGAR_MULTIPART_PART_SIZE: "1024",
        HANGAR_STALLED_IMPORT_GRACE: "1.5",
        HANGAR_WEB_DOWNLOAD_ALLOW_LOOPBACK: "yes",
      }),
    );
    expect(message).toMatch(/^invalid Hangar configuration: /);
    for (const expected of [
      "HANGAR_TABLE: Too small: expected string to have >=1 characters",
      "HANGAR_BUCKET: Invalid input: expected string, received undefined",
      "HANGAR_S3_ENDPOINT: Invalid URL",
      "HANGAR_PART_SIZE: Invalid input: expected number, received NaN",
      "HANGAR_QUOTA_IMAGE_SIZE_TOTAL: Too small: expected number to be >=-1",
      'HANGAR_OS_HASH_ALGO: Invalid option: expected one of "sha512"|"sha384"|"sha256"',
      "HANGAR_ACCEPTED_FORMATS.1: Invalid option: expected one of",
      "HANGAR_UPLOAD_URL_TTL: Too small: expected number to be >0",
      "HANGAR_MULTIPART_PART_SIZE: Too small: expected number to be >=5242880",
      "HANGAR_STALLED_IMPORT_GRACE: Invalid input: expected int, received number",
      'HANGAR_WEB_DOWNLOAD_ALLOW_LOOPBACK: Invalid option: expected one of "0"|"1"',
    ]) {
      expect(message).toContain(expected);
    }
  });

  it("refuses an empty list, an infinite number and an over-large part size", () => {
    const message = refusal(() =>
      loadConfig({
        ...STORE,
        ...JWT,
        HANGAR_ACCEPTED_FORMATS: " , ",
        HANGAR_MAX_VIRTUAL_SIZE: "Infinity",
        HANGAR_MULTIPART_PART_SIZE: String(6 * 1024 ** 3),
        HANGAR_MAX_GZIP_RATIO: "",
      }),
    );
    expect(message).toContain("HANGAR_ACCEPTED_FORMATS: Too small: expected array to have >=1 items");
    expect(message).toContain("HANGAR_MAX_VIRTUAL_SIZE: Invalid input: expected number, received Infinity");
    expect(message).toContain("HANGAR_MULTIPART_PART_SIZE: Too big: expected number to be <=5368709120");
    expect(message).toContain("HANGAR_MAX_GZIP_RATIO: Too small: expected number to be >0");
  });

  it("gives each function only its slice: the importer needs no JWT settings", () => {
    expect(Object.keys(loadImporterConfig(STORE))).not.toContain("jwt");
    expect(Object.keys(loadReconcilerConfig(STORE))).not.toContain("osHashAlgo");
    expect(loadSweeperConfig({ ...STORE, HANGAR_STALLED_IMPORT_GRACE: "7" }).stalledImportGraceSeconds).toBe(
      7,
    );
    expect(loadWebDownloadConfig(STORE).webDownload.timeoutSeconds).toBe(840);
    expect(refusal(() => loadApiConfig(STORE))).toBe(
      "invalid Hangar configuration: HANGAR_JWT_ISSUER: Invalid input: expected string, received undefined",
    );
  });

  it("wants a JWKS URL or a public JWK for tokens", () => {
    expect(refusal(() => loadJwtConfig({ HANGAR_JWT_ISSUER: "i" }))).toBe(
      "invalid Hangar configuration: set HANGAR_JWT_JWKS_URL or HANGAR_JWT_PUBLIC_JWK",
    );
    expect(refusal(() => loadJwtConfig({ HANGAR_JWT_ISSUER: "i", HANGAR_JWT_JWKS_URL: "jwks" }))).toBe(
      "invalid Hangar configuration: HANGAR_JWT_JWKS_URL: Invalid URL",
    );
  });
});
