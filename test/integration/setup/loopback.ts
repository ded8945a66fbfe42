const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

/** Integration tests talk to nothing but loopback; any other endpoint is a configuration mistake. */
export function assertLoopback(url: string): void {
  const host = new URL(url).hostname;
  if (!LOOPBACK_HOSTS.has(host)) {
    throw new Error(`integration tests only talk to loopback, refusing ${url}`);
  }
}
