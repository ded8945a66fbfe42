import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:tls";

/**
 * A TLS proxy on loopback in front of `upstream` (the stack's MinIO speaks plain HTTP), with a certificate
 * made for the test (`certFile`, for 127.0.0.1): a client configured with its https endpoint talks TLS as
 * it would to S3. Bytes pass through unchanged, so storage checks signatures against the proxy's address.
 */
export async function startTlsProxy(upstream: URL): Promise<{
  endpoint: string;
  certFile: string;
  dir: string;
  close: () => void;
}> {
  const dir = mkdtempSync(join(tmpdir(), "hangar-tls-"));
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
      "-keyout",
      join(dir, "key.pem"),
      "-out",
      join(dir, "cert.pem"),
    ],
    { stdio: "ignore" },
  );
  const proxy = createServer({
    key: readFileSync(join(dir, "key.pem")),
    cert: readFileSync(join(dir, "cert.pem")),
  });
  proxy.on("secureConnection", (client) => {
    const server = connect(Number(upstream.port), upstream.hostname);
    client.pipe(server).pipe(client);
    client.on("error", () => server.destroy());
    server.on("error", () => client.destroy());
  });
  await new Promise<void>((ready) => proxy.listen(0, "127.0.0.1", ready));
  const port = (proxy.address() as { port: number }).port;
  return {
    endpoint: `https://127.0.0.1:${port}`,
    certFile: join(dir, "cert.pem"),
    dir,
    close: () => {
      proxy.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
