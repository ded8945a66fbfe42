import { access, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CreateTableCommand, DynamoDBClient, GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { afterEach, describe, expect, inject, it } from "vitest";
import { tableDefinition } from "../../functions/adapters/dynamodb/table.ts";
import { ensureDynamoDbLocal } from "../../infra/local/binaries.ts";
import { DYNAMODB_LOCAL_DB_FILE, emptyWalDatabase } from "../../infra/local/dynamodb-file.ts";
import {
  freePort,
  type ServiceHandle,
  spawnService,
  startDynamoDbLocal,
  waitUntilReady,
} from "../../infra/local/services.ts";

const TABLE = "hangar-file-test";
const started: ServiceHandle[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((s) => s.stop()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function setup() {
  const dbPath = await mkdtemp(join(tmpdir(), "hangar-ddb-file-"));
  dirs.push(dbPath);
  const port = await freePort();
  const dynamo = await ensureDynamoDbLocal(inject("hangarStack").cacheDir);
  const client = new DynamoDBClient({
    endpoint: `http://127.0.0.1:${port}`,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
  const start = async () => {
    const service = await startDynamoDbLocal({ ...dynamo, dbPath, port });
    started.push(service);
    return service;
  };
  const put = (id: string) =>
    client.send(
      new PutItemCommand({ TableName: TABLE, Item: { pk: { S: id }, sk: { S: "IMAGE" }, n: { N: "1" } } }),
    );
  const get = async (id: string) =>
    (
      await client.send(
        new GetItemCommand({
          TableName: TABLE,
          Key: { pk: { S: id }, sk: { S: "IMAGE" } },
          ConsistentRead: true,
        }),
      )
    ).Item?.pk?.S;
  const file = join(dbPath, DYNAMODB_LOCAL_DB_FILE);
  /** The header's file format versions: [2, 2] for a write-ahead log, [1, 1] for a rollback journal. */
  const versions = async () => [...(await readFile(file)).subarray(18, 20)];
  const hasLog = () =>
    access(`${file}-wal`).then(
      () => true,
      () => false,
    );
  return { dbPath, port, dynamo, client, start, put, get, file, versions, hasLog };
}

describe("DynamoDB Local's database file", () => {
  it("keeps a write-ahead log, and its records survive a stop and a kill (SIGKILL) of DynamoDB Local", async () => {
    const t = await setup();
    try {
      let service = await t.start();
      await t.client.send(new CreateTableCommand(tableDefinition(TABLE)));
      await t.put("before-stop");
      expect(await t.hasLog()).toBe(true);
      await service.stop();
      expect(await t.versions()).toEqual([2, 2]);

      service = await t.start();
      expect(await t.get("before-stop")).toBe("before-stop");
      await t.put("before-kill");
      process.kill(service.pid, "SIGKILL");
      await service.exited;

      await t.start();
      expect(await t.get("before-stop")).toBe("before-stop");
      expect(await t.get("before-kill")).toBe("before-kill");
    } finally {
      t.client.destroy();
    }
  }, 120_000);

  it("switches a database an earlier start kept with a rollback journal to WAL at the next start, records and all", async () => {
    const t = await setup();
    try {
      // DynamoDB Local as it was started before: SQLite's default rollback journal.
      const rollback = emptyWalDatabase();
      rollback[18] = 1;
      rollback[19] = 1;
      await writeFile(t.file, rollback);
      const earlier = spawnService({
        name: "DynamoDB Local (rollback journal)",
        command: t.dynamo.java,
        args: [
          `-Djava.library.path=${t.dynamo.libDir}`,
          "-jar",
          t.dynamo.jar,
          "-sharedDb",
          "-dbPath",
          t.dbPath,
          "-port",
          String(t.port),
          "-disableTelemetry",
        ],
        cwd: t.dbPath,
        env: { PATH: process.env.PATH ?? "" },
      });
      started.push(earlier);
      await waitUntilReady(earlier, async () => (await fetch(`http://127.0.0.1:${t.port}/`)).status > 0, {
        timeoutMs: 60_000,
      });
      await t.client.send(new CreateTableCommand(tableDefinition(TABLE)));
      await t.put("kept");
      expect(await t.hasLog()).toBe(false);
      await earlier.stop();
      expect(await t.versions()).toEqual([1, 1]);

      await t.start();
      expect(await t.versions()).toEqual([2, 2]);
      expect(await t.get("kept")).toBe("kept");
      await t.put("after");
      expect(await t.hasLog()).toBe(true);
      expect(await t.get("after")).toBe("after");
    } finally {
      t.client.destroy();
    }
  }, 120_000);
});
