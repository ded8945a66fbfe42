import { describe, expect, it } from "vitest";
import { CorruptRecordError, toRecord } from "../../../functions/adapters/dynamodb/image-item.ts";

// The record every read of an image item goes through (functions/adapters/dynamodb/image-item.ts): what
// it accepts, what it gives, and how it names what is wrong with an item.
const ITEM = {
  pk: "IMAGE#i1",
  sk: "IMAGE",
  gsi1pk: "OWNER#p",
  gsi1sk: "2026-01-01T00:00:00.000Z#i1",
  held_image_count_total: 1,
  id: "i1",
  name: "cirros",
  status: "active",
  visibility: "private",
  protected: false,
  os_hidden: true,
  owner: "p",
  disk_format: "qcow2",
  container_format: "bare",
  size: 4096,
  virtual_size: 8192,
  checksum: "c",
  os_hash_algo: "sha512",
  os_hash_value: "h",
  min_disk: 1,
  min_ram: 2,
  tags: ["a", "b"],
  created_at: "2026-01-01T00:00:00.000Z",
  updated_at: "2026-01-02T00:00:00.000Z",
  properties: { os_distro: "cirros" },
  upload_size: 4096,
  upload_sha256: "s",
  source_format: "qcow2",
  converted: false,
  failure: null,
  import_progress: { bytes_read: 1, total: 2, updated_at: "t", workers: 3, stray: "x" },
  import_lease_until: null,
  import_takeovers: 1,
  request_id: "req-1",
  multipart_upload_id: null,
  stored_object: { key: "staging/i1/upload", version_id: "v1" },
};

function refusal(item: unknown): string {
  try {
    toRecord(item as Record<string, unknown>);
  } catch (error) {
    expect(error).toBeInstanceOf(CorruptRecordError);
    return (error as Error).message;
  }
  throw new Error("the item was accepted");
}

describe("the stored image record", () => {
  it("gives the record's fields, in order, without the item's keys, index keys and quota holds", () => {
    const { pk, sk, gsi1pk, gsi1sk, held_image_count_total, ...fields } = ITEM;
    const { stray, ...progress } = ITEM.import_progress;
    const record = toRecord(ITEM);
    expect(record).toEqual({ ...fields, import_progress: progress });
    // In the record's own order, whatever the item's.
    expect(Object.keys(record)).toEqual(ORDER.filter((k) => k in fields));
    // Lists and maps are the record's own, not the item's.
    expect(record.tags).not.toBe(ITEM.tags);
    expect(record.properties).not.toBe(ITEM.properties);
  });

  it("gives an item written before a field existed that field's default, and leaves internal ones out", () => {
    const record = toRecord({
      id: "i2",
      status: "queued",
      visibility: "public",
      protected: true,
      owner: "p",
      created_at: "t",
      updated_at: "t",
    });
    expect(record).toEqual({
      id: "i2",
      name: null,
      status: "queued",
      visibility: "public",
      protected: true,
      os_hidden: false,
      owner: "p",
      disk_format: null,
      container_format: null,
      size: null,
      virtual_size: null,
      checksum: null,
      os_hash_algo: null,
      os_hash_value: null,
      min_disk: 0,
      min_ram: 0,
      tags: [],
      created_at: "t",
      updated_at: "t",
      properties: {},
      upload_size: null,
      upload_sha256: null,
      source_format: null,
      converted: null,
      failure: null,
      import_progress: null,
      import_lease_until: null,
    });
    expect(Object.keys(record)).not.toContain("stored_object");
  });

  it("keeps the fan-out's job as it is, and any object for it", () => {
    const job = { phase: "convert", ranges: [{ start: 0 }] };
    expect(toRecord({ ...ITEM, import_fanout: job }).import_fanout).toBe(job);
    expect(refusal({ ...ITEM, import_fanout: ["x"] })).toBe(
      "item IMAGE#i1 is not a valid image record: import_fanout: Invalid input",
    );
  });

  it("names every field that is missing or wrong, with its path", () => {
    const message = refusal({
      ...ITEM,
      id: undefined,
      status: "flying",
      protected: "no",
      size: -1,
      virtual_size: Number.POSITIVE_INFINITY,
      tags: ["a", 2],
      properties: { a: 1 },
      failure: { reason: "r" },
      import_progress: { bytes_read: 1, total: "2", updated_at: "t" },
      stored_object: { key: "k", version_id: 3 },
      request_id: 5,
    });
    expect(message).toBe(
      [
        "item IMAGE#i1 is not a valid image record: id: Invalid input: expected string, received undefined",
        'status: Invalid option: expected one of "queued"|"importing"|"active"|"killed"|"deactivated"|"deleted"',
        "protected: Invalid input: expected boolean, received string",
        "size: Too small: expected number to be >=0",
        "virtual_size: Invalid input: expected number, received Infinity",
        "tags.1: Invalid input: expected string, received number",
        "properties.a: Invalid input: expected string, received number",
        "failure.message: Invalid input: expected string, received undefined",
        "import_progress.total: Invalid input: expected number, received string",
        "request_id: Invalid input: expected string, received number",
        "stored_object.version_id: Invalid input: expected string, received number",
      ].join("; "),
    );
  });

  it("refuses lists and maps of the wrong kind, and an item that is no object", () => {
    expect(refusal({ ...ITEM, tags: new Set(["a"]), properties: ["a"] })).toBe(
      "item IMAGE#i1 is not a valid image record: tags: Invalid input: expected array, received Set; properties: Invalid input: expected record, received array",
    );
    expect(refusal({ ...ITEM, failure: "broken", min_disk: null })).toBe(
      "item IMAGE#i1 is not a valid image record: min_disk: Invalid input: expected number, received null; failure: Invalid input: expected object, received string",
    );
    expect(refusal([])).toBe(
      "item undefined is not a valid image record: : Invalid input: expected object, received array",
    );
  });
});

const ORDER = [
  "id",
  "name",
  "status",
  "visibility",
  "protected",
  "os_hidden",
  "owner",
  "disk_format",
  "container_format",
  "size",
  "virtual_size",
  "checksum",
  "os_hash_algo",
  "os_hash_value",
  "min_disk",
  "min_ram",
  "tags",
  "created_at",
  "updated_at",
  "properties",
  "upload_size",
  "upload_sha256",
  "source_format",
  "converted",
  "failure",
  "import_progress",
  "import_lease_until",
  "import_takeovers",
  "request_id",
  "multipart_upload_id",
  "multipart_started_at",
  "import_execution",
  "stored_object",
  "import_fanout",
];
