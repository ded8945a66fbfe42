import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { emptyWalDatabase, useWriteAheadLog } from "../../../infra/local/dynamodb-file.ts";

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});
async function dbFile(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "hangar-ddb-file-"));
  dirs.push(dir);
  return join(dir, "shared-local-instance.db");
}
/** The header's file format write and read versions: 1 for a rollback journal, 2 for WAL. */
const versions = async (file: string) => [...(await readFile(file)).subarray(18, 20)];

/** A database in rollback mode, as DynamoDB Local's SQLite creates it by default. */
function rollbackDatabase(): Buffer {
  const page = emptyWalDatabase();
  page[18] = 1;
  page[19] = 1;
  return page;
}

describe("DynamoDB Local's database file in WAL mode", () => {
  it("writes an empty SQLite database in WAL mode where there is none", async () => {
    const file = await dbFile();
    expect(await useWriteAheadLog(file)).toBe("created");
    const bytes = await readFile(file);
    expect(bytes.subarray(0, 16).toString("latin1")).toBe("SQLite format 3\0");
    expect(bytes.readUInt16BE(16)).toBe(4096);
    expect(bytes).toHaveLength(4096);
    expect(await versions(file)).toEqual([2, 2]);
    // One page: sqlite_master, an empty leaf table b-tree.
    expect([bytes.readUInt32BE(28), bytes[100], bytes.readUInt16BE(103)]).toEqual([1, 0x0d, 0]);
  });

  it("switches a cleanly closed rollback-mode database to WAL, touching only the two version bytes", async () => {
    const file = await dbFile();
    const before = rollbackDatabase();
    await writeFile(file, before);
    expect(await useWriteAheadLog(file)).toBe("converted");
    const after = await readFile(file);
    expect(await versions(file)).toEqual([2, 2]);
    expect(Buffer.concat([after.subarray(0, 18), after.subarray(20)])).toEqual(
      Buffer.concat([before.subarray(0, 18), before.subarray(20)]),
    );
    expect(await useWriteAheadLog(file)).toBe("unchanged");
  });

  it("leaves a database with a journal left by a crash as it is: SQLite rolls it back first", async () => {
    const file = await dbFile();
    await writeFile(file, rollbackDatabase());
    await writeFile(`${file}-journal`, Buffer.alloc(512, 1));
    expect(await useWriteAheadLog(file)).toBe("unchanged");
    expect(await versions(file)).toEqual([1, 1]);
  });

  it("leaves a file that is not a SQLite database as it is", async () => {
    const file = await dbFile();
    await writeFile(file, Buffer.alloc(200, 7));
    expect(await useWriteAheadLog(file)).toBe("unchanged");
    expect(await readFile(file)).toEqual(Buffer.alloc(200, 7));
  });
});
