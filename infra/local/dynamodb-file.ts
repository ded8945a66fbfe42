import { open, stat, writeFile } from "node:fs/promises";

/** The SQLite file DynamoDB Local keeps every table in when started with `-sharedDb` and `-dbPath`. */
export const DYNAMODB_LOCAL_DB_FILE = "shared-local-instance.db";

const MAGIC = Buffer.from("SQLite format 3\0", "latin1");
/** Offsets 18 and 19 of the header: the file format write and read versions, 1 for rollback journals, 2 for WAL. */
const VERSIONS_AT = 18;
const ROLLBACK = 1;
const WAL = 2;
const PAGE_SIZE = 4096;

/**
 * An empty SQLite database (one page, no tables) in WAL mode: the file `sqlite3 <file> "PRAGMA
 * page_size=4096; PRAGMA journal_mode=WAL;"` writes, byte for byte but the library version at offset 96.
 * Layout: https://www.sqlite.org/fileformat2.html.
 */
export function emptyWalDatabase(): Buffer {
  const page = Buffer.alloc(PAGE_SIZE);
  MAGIC.copy(page, 0);
  page.writeUInt16BE(PAGE_SIZE, 16);
  page[VERSIONS_AT] = WAL;
  page[VERSIONS_AT + 1] = WAL;
  page[21] = 64; // maximum embedded payload fraction
  page[22] = 32; // minimum embedded payload fraction
  page[23] = 32; // leaf payload fraction
  page.writeUInt32BE(1, 24); // file change counter
  page.writeUInt32BE(1, 28); // database size in pages
  page.writeUInt32BE(1, 92); // version-valid-for: the change counter above is current
  page.writeUInt32BE(3_008_007, 96); // SQLite version number (that of sqlite4java 392, informational)
  page[100] = 0x0d; // page 1 is an empty leaf table b-tree: sqlite_master
  page.writeUInt16BE(PAGE_SIZE, 105); // start of its (empty) cell content area
  return page;
}

export type JournalChange = "created" | "converted" | "unchanged";

/**
 * Makes DynamoDB Local's database file keep a write-ahead log (SQLite's WAL) instead of a rollback
 * journal, before DynamoDB Local opens it. DynamoDB Local sets no journal mode, so SQLite's default
 * rollback journal makes every write transaction create, write, sync and delete a `-journal` file and
 * sync the database too; with WAL a transaction appends to `-wal` and syncs it once. Durability is
 * unchanged (synchronous=FULL either way), and the journal mode is a property of the file, kept across
 * restarts; SQLite checkpoints the log into the database as it grows and when the last connection closes.
 *
 * - no file yet: writes an empty database already in WAL mode (DynamoDB Local then creates its tables in it);
 * - a database in rollback mode with no journal or log beside it (closed cleanly): switches its header to
 *   WAL, which is what `PRAGMA journal_mode=WAL` changes in the file;
 * - anything else (already WAL, a journal left by a crash that SQLite must roll back first, not a SQLite
 *   file): left as it is. A rollback-mode file left for now is switched at a later start.
 */
export async function useWriteAheadLog(file: string): Promise<JournalChange> {
  try {
    await writeFile(file, emptyWalDatabase(), { flag: "wx" });
    return "created";
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  if ((await nonEmpty(`${file}-journal`)) || (await nonEmpty(`${file}-wal`))) return "unchanged";
  const handle = await open(file, "r+");
  try {
    const header = Buffer.alloc(100);
    const { bytesRead } = await handle.read(header, 0, header.length, 0);
    if (bytesRead < header.length || !header.subarray(0, MAGIC.length).equals(MAGIC)) return "unchanged";
    if (header[VERSIONS_AT] !== ROLLBACK || header[VERSIONS_AT + 1] !== ROLLBACK) return "unchanged";
    await handle.write(Buffer.from([WAL, WAL]), 0, 2, VERSIONS_AT);
    await handle.sync();
    return "converted";
  } finally {
    await handle.close();
  }
}

async function nonEmpty(path: string): Promise<boolean> {
  try {
    return (await stat(path)).size > 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}
