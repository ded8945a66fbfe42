import { afterEach, describe, expect, it } from "vitest";
import { defaultProvider } from "../../../functions/adapters/aws/lambda-credentials.ts";

// The Lambda bundles' credential provider (scripts/build.mjs swaps it in for the SDK's default chain).
const NAMES = [
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "AWS_CREDENTIAL_EXPIRATION",
];
const saved = Object.fromEntries(NAMES.map((n) => [n, process.env[n]]));

afterEach(() => {
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

function setEnv(values: Record<string, string | undefined>) {
  for (const name of NAMES) {
    const value = values[name];
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
}

describe("Lambda credentials", () => {
  it("reads the role's keys from the environment, as Lambda sets them, at each call", async () => {
    setEnv({ AWS_ACCESS_KEY_ID: "AKID", AWS_SECRET_ACCESS_KEY: "secret", AWS_SESSION_TOKEN: "token" });
    const provider = defaultProvider({});
    expect(await provider()).toEqual({
      accessKeyId: "AKID",
      secretAccessKey: "secret",
      sessionToken: "token",
    });
    setEnv({
      AWS_ACCESS_KEY_ID: "AKID2",
      AWS_SECRET_ACCESS_KEY: "secret2",
      AWS_CREDENTIAL_EXPIRATION: "2030-01-01T00:00:00Z",
    });
    expect(await provider()).toEqual({
      accessKeyId: "AKID2",
      secretAccessKey: "secret2",
      expiration: new Date("2030-01-01T00:00:00Z"),
    });
  });

  it("says what is missing instead of looking anywhere else", async () => {
    setEnv({ AWS_ACCESS_KEY_ID: "AKID" });
    await expect(defaultProvider()()).rejects.toThrow(/AWS_SECRET_ACCESS_KEY/);
  });
});
