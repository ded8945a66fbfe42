/** The SDK's `AwsCredentialIdentity`, the fields this provider fills. */
export interface EnvironmentCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

/**
 * The credential provider the Lambda bundles use in place of the SDK's default chain
 * (`@aws-sdk/credential-provider-node`, swapped in by scripts/build.mjs). Lambda always hands a function
 * its role's keys in the environment, so on Lambda the default chain never gets past its first link; its
 * other links (SSO, profiles, STS web identity, container and instance metadata) and the nested SDK
 * clients they load were a sixth of each bundle and most of the importer's module init (docs/deploy.md).
 * Code run from source (tests, scripts, the local stack) keeps the default chain.
 */
export const defaultProvider = (_init?: unknown) => async (): Promise<EnvironmentCredentials> => {
  const accessKeyId = process.env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) {
    throw new Error(
      "no AWS credentials: Hangar's Lambda bundles read AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment, as Lambda sets them",
    );
  }
  const expiration = process.env.AWS_CREDENTIAL_EXPIRATION;
  return {
    accessKeyId,
    secretAccessKey,
    ...(process.env.AWS_SESSION_TOKEN ? { sessionToken: process.env.AWS_SESSION_TOKEN } : {}),
    ...(expiration ? { expiration: new Date(expiration) } : {}),
  };
};
