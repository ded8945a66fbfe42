import type { JWK } from "jose";
import type { LocalInfo } from "../../../infra/local/stack.ts";

/** What the integration global setup hands to every test file through vitest's provide/inject. */
export interface ProvidedStack {
  info: LocalInfo;
  /** The local ES256 private key, so tests can mint tokens for any identity. */
  signingKey: JWK;
  /** The stack's temporary HANGAR_HOME. */
  home: string;
  /** Where the verified MinIO and DynamoDB Local binaries are cached (for tests that start a stack of their own). */
  cacheDir: string;
  /** The functions' built bundles (`<dir>/<handler>/index.mjs`), as the stack runs them. */
  bundlesDir: string;
  /** The stack's receiver of MinIO bucket events. */
  webhookUrl: string;
  /** Every line the stack logs (storage events received, handled, failed) is appended here; kept when a test fails. */
  logFile: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    hangarStack: ProvidedStack;
  }
}
