import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeEventKey, parseStorageEvent } from "../../../functions/adapters/s3/events.ts";
import { imageIdFromStagingKey } from "../../../functions/core/image/image.ts";

const id = "6f1c2a3b-1d2e-4f50-8a9b-0c1d2e3f4a5b";
const record = (key: string, eventName = "ObjectCreated:Put") => ({
  eventName,
  s3: { bucket: { name: "b" }, object: { key, size: 1 } },
});

describe("storage events", () => {
  it("reads S3 envelopes", () => {
    expect(parseStorageEvent({ Records: [record(`staging/${id}/upload`)] })).toEqual([
      { bucket: "b", key: `staging/${id}/upload` },
    ]);
  });
  it("reads MinIO envelopes and decodes %2F and + in keys", () => {
    const body = {
      EventName: "s3:ObjectCreated:Put",
      Key: `b/staging/${id}/upload`,
      Records: [record(`staging%2F${id}%2Fupload`, "s3:ObjectCreated:CompleteMultipartUpload")],
    };
    expect(parseStorageEvent(body)).toEqual([{ bucket: "b", key: `staging/${id}/upload` }]);
    expect(decodeEventKey("a+b%2Bc")).toBe("a b+c");
  });
  it("passes on the version an event names, not the `null` of an object written without versions", () => {
    const versioned = (versionId: string) => ({
      Records: [
        {
          ...record(`staging/${id}/upload`),
          s3: { ...record("").s3, object: { key: `staging/${id}/upload`, versionId } },
        },
      ],
    });
    expect(parseStorageEvent(versioned("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"))).toEqual([
      { bucket: "b", key: `staging/${id}/upload`, versionId: "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY" },
    ]);
    expect(parseStorageEvent(versioned("null"))).toEqual([{ bucket: "b", key: `staging/${id}/upload` }]);
  });
  it("skips other event kinds and refuses what is not an envelope", () => {
    expect(parseStorageEvent({ Records: [record("x", "ObjectRemoved:Delete")] })).toEqual([]);
    expect(() => parseStorageEvent({ nope: 1 })).toThrow(/not an S3 event/);
    expect(() => parseStorageEvent("Records")).toThrow(/not an S3 event/);
  });
  it("only keys Hangar generates name an image", () => {
    expect(imageIdFromStagingKey(`staging/${id}/upload`)).toBe(id);
    expect(imageIdFromStagingKey(`images/${id}`)).toBeUndefined();
    expect(imageIdFromStagingKey(`staging/${id}/../x`)).toBeUndefined();
    expect(imageIdFromStagingKey(`staging/${id.toUpperCase()}/upload`)).toBeUndefined();
    fc.assert(
      fc.property(fc.string(), (s) => {
        const got = imageIdFromStagingKey(s);
        return got === undefined || s === `staging/${got}/${s.slice(`staging/${got}/`.length)}`;
      }),
    );
  });
});
