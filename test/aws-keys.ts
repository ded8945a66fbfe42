/**
 * Puts AWS keys in the environment, where the SDK's default credentials (and so the functions' writing
 * client) read them; the function returned puts back what was there before.
 */
export function useAwsKeys(accessKeyId: string, secretAccessKey: string): () => void {
  const saved = [
    ["AWS_ACCESS_KEY_ID", process.env.AWS_ACCESS_KEY_ID],
    ["AWS_SECRET_ACCESS_KEY", process.env.AWS_SECRET_ACCESS_KEY],
  ] as const;
  process.env.AWS_ACCESS_KEY_ID = accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = secretAccessKey;
  return () => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
}
