import { describe, expect, it } from "vitest";
import { InvalidStorageEventError, parseStorageEvent } from "../../../functions/adapters/s3/events.ts";

// The envelope schema is as strict as the fields Hangar reads: each refusal says what was wrong.
const record = (object: Record<string, unknown>, bucket: unknown = { name: "b" }) => ({
  eventName: "ObjectCreated:Put",
  s3: { bucket, object },
});

function refusal(body: unknown): string {
  try {
    parseStorageEvent(body);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidStorageEventError);
    return (error as Error).message;
  }
  throw new Error("the envelope was accepted");
}

describe("storage event envelope", () => {
  it("keeps unknown fields out of the way and reads only the ones it needs", () => {
    const body = {
      EventName: "s3:ObjectCreated:Put",
      Records: [{ ...record({ key: "k", size: 3, eTag: "x" }), awsRegion: "us-east-1" }],
    };
    expect(parseStorageEvent(body)).toEqual([{ bucket: "b", key: "k" }]);
    expect(parseStorageEvent({ Records: [record({ key: "k" })] })).toEqual([{ bucket: "b", key: "k" }]);
  });

  it("refuses a record whose fields have the wrong type", () => {
    expect(refusal(null)).toBe("not an S3 event notification: Invalid input: expected object, received null");
    expect(refusal({})).toBe(
      "not an S3 event notification: Invalid input: expected array, received undefined",
    );
    expect(refusal({ Records: [record({ key: 5 })] })).toBe(
      "not an S3 event notification: Invalid input: expected string, received number",
    );
    expect(refusal({ Records: [record({ key: "k", size: "3" })] })).toBe(
      "not an S3 event notification: Invalid input: expected number, received string",
    );
    expect(refusal({ Records: [record({ key: "k" }, {})] })).toBe(
      "not an S3 event notification: Invalid input: expected string, received undefined",
    );
    expect(refusal({ Records: [{ s3: record({ key: "k" }).s3 }] })).toBe(
      "not an S3 event notification: Invalid input: expected string, received undefined",
    );
  });
});
