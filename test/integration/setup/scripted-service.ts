import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * Services on loopback that answer each request as a test says (the n-th request, counted from 1): how a
 * client treats silence, refusals and faults no real service produces on demand. `closeServices` ends
 * every one started.
 */
const servers: Server[] = [];

export async function scriptedService(
  answer: (req: IncomingMessage, res: ServerResponse, n: number) => void,
) {
  let requests = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => answer(req, res, ++requests));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { endpoint, requests: () => requests };
}

export async function closeServices(): Promise<void> {
  const all = servers.splice(0);
  // A silent service's sockets would keep `close` waiting.
  for (const s of all) s.closeAllConnections();
  await Promise.all(all.map((s) => new Promise((r) => s.close(r))));
}
