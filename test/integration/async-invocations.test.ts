import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { access, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import type { FailedInvocation } from "../../infra/local/lambda/async-invoker.ts";
import { freePort } from "../../infra/local/services.ts";
import { type LocalStack, type StackOptions, startStack } from "../../infra/local/stack.ts";
import { assertLoopback, ownStackOptions } from "./setup/stack.ts";

const repoRoot = join(import.meta.dirname, "..", "..");
const run = promisify(execFile);

// A stack of its own: its importer is given a DynamoDB endpoint nobody listens on, so every import
// fails the way a storage or database outage makes it fail, then the stack is started again healthy.
describe("storage events take Lambda's asynchronous path", () => {
  it("a failing import is retried twice, lands in the failure destination, and npm run replay delivers it again", async () => {
    const home = await mkdtemp(join(tmpdir(), "hangar-retry-"));
    const lines: string[] = [];
    const options = (): Promise<StackOptions> =>
      ownStackOptions(home, { retryDelaysMs: [300, 600], log: (line) => lines.push(line) });
    const until = async (pattern: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        for (const l of lines) {
          const m = pattern.exec(l);
          if (m) return m;
        }
        if (Date.now() > deadline)
          throw new Error(`no log line matching ${pattern}; log:\n${lines.join("\n")}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const nobody = await freePort();
    let stack: LocalStack = await startStack({
      ...(await options()),
      functionEnv: { importer: { HANGAR_DYNAMODB_ENDPOINT: `http://127.0.0.1:${nobody}` } },
    });
    const image = async (id: string) => {
      const res = await fetch(`${stack.info.apiUrl}/v2/images/${id}`, {
        headers: { "x-auth-token": stack.info.tokens.alice },
      });
      expect(res.status).toBe(200);
      return (await res.json()) as { status: string };
    };
    try {
      assertLoopback(stack.info.apiUrl);
      const created = await fetch(`${stack.info.apiUrl}/v2/images`, {
        method: "POST",
        headers: { "x-auth-token": stack.info.tokens.alice, "content-type": "application/json" },
        body: JSON.stringify({ name: `retry-${randomUUID()}`, disk_format: "raw", container_format: "bare" }),
      });
      expect(created.status).toBe(201);
      const { id, upload } = (await created.json()) as {
        id: string;
        upload: { url: string; headers: Record<string, string> };
      };
      assertLoopback(upload.url);
      const put = await fetch(upload.url, {
        method: "PUT",
        headers: upload.headers,
        body: randomBytes(8192),
      });
      expect(put.status).toBe(200);

      const object = `${stack.info.bucket}/staging/${id}`;
      const escaped = object.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
      await until(
        new RegExp(
          `storage event failed: ObjectCreated:Put ${escaped}\\S*: .*\\(attempt 1 of 3\\); retrying in 0.3 s`,
        ),
      );
      await until(
        new RegExp(
          `storage event failed: ObjectCreated:Put ${escaped}\\S*: .*\\(attempt 2 of 3\\); retrying in 0.6 s`,
        ),
      );
      const last = await until(
        new RegExp(
          `storage event failed: ObjectCreated:Put ${escaped}\\S*: .*\\(attempt 3 of 3\\); sent to the failure destination (\\S+); replay it with: npm run replay -- (\\S+)$`,
        ),
      );
      const file = last[1] ?? "";
      expect(last[2]).toBe(file);
      expect(dirname(file)).toBe(join(home, "failed-events"));
      const failed = JSON.parse(await readFile(file, "utf8")) as FailedInvocation;
      expect(failed.functionName).toBe("hangar-local-importer");
      expect(failed.attempts).toHaveLength(3);
      for (const attempt of failed.attempts) expect(attempt.error.errorMessage).not.toBe("");
      const record = (failed.event as { Records: { eventSource: string; s3: { object: { key: string } } }[] })
        .Records[0];
      expect(record?.eventSource).toBe("aws:s3");
      expect(record?.s3.object.key).toMatch(new RegExp(`^staging/${id}`));
      expect((await image(id)).status).toBe("queued");
      // Nothing is left in the queue: the event is in the failure destination only.
      expect(lines.filter((l) => l.includes(`storage event handled: ObjectCreated:Put ${object}`))).toEqual(
        [],
      );

      // The outage is over: the stack starts again with the importer's real endpoint.
      await stack.stop();
      stack = await startStack(await options());
      const replay = await run(
        process.execPath,
        [
          join(repoRoot, "node_modules", "tsx", "dist", "cli.mjs"),
          join(repoRoot, "scripts", "replay.ts"),
          file,
        ],
        { cwd: repoRoot, timeout: 60_000 },
      );
      expect(replay.stdout).toContain("queued again for hangar-local-importer");
      await access(join(home, "failed-events", "replayed", basename(file)));
      await until(new RegExp(`storage event handled: ObjectCreated:Put ${escaped}`));
      expect((await image(id)).status).toBe("active");
    } finally {
      await stack.stop();
      await rm(home, { recursive: true, force: true });
    }
  }, 180_000);
});
