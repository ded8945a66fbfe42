import { describe, expect, it } from "vitest";
import { fieldInfo, imageCatalogue, readOnlyFields } from "../../../functions/core/image/catalogue.ts";
import { IMAGE_STATUSES, type ImageRecord } from "../../../functions/core/image/image.ts";
import type { UploadLink } from "../../../functions/core/uploads/multipart.ts";
import { imageJson, imageSchema } from "../../../functions/http/image-json.ts";
import { imageRecord } from "../fakes.ts";

const { ImageJson, SETTABLE_FIELDS, SHOWN_FIELDS } = imageCatalogue();
const READ_ONLY_FIELDS = readOnlyFields();

/** A record with every field Hangar keeps, internal ones included. */
const full = (over: Partial<ImageRecord> = {}): ImageRecord =>
  imageRecord({
    import_takeovers: 1,
    multipart_upload_id: "upload-1",
    multipart_started_at: "2026-01-01T00:00:00.000Z",
    import_lease_until: "2026-01-01T00:01:00.000Z",
    properties: { os_distro: "debian" },
    ...over,
  });

const put: UploadLink = {
  method: "PUT",
  url: "http://s3/x",
  headers: { "Content-Length": "5" },
  expiresAt: "t",
};
const plan: UploadLink = {
  method: "multipart",
  partSize: 16,
  partCount: 2,
  expiresAt: "t",
  partsUrl: "/p",
  completeUrl: "/c",
  cancelUrl: "/x",
} as UploadLink;

describe("the image catalogue", () => {
  it("catalogues every field of the stored record", () => {
    for (const name of Object.keys(full())) expect(fieldInfo(name), name).toBeDefined();
  });

  it("marks as read-only every shown field that is not settable, and every internal one; settable ones are not", () => {
    for (const name of SHOWN_FIELDS) {
      expect(READ_ONLY_FIELDS.has(name), name).toBe(!Object.hasOwn(SETTABLE_FIELDS, name));
    }
    for (const name of [
      "multipart_upload_id",
      "multipart_started_at",
      "import_lease_until",
      "import_takeovers",
    ]) {
      expect(READ_ONLY_FIELDS.has(name), name).toBe(true);
    }
    for (const name of ["deleted", "properties", "os_glance_x"])
      expect(fieldInfo(name)?.access).toBe("reserved");
    expect(fieldInfo("hw_disk_bus")).toBeUndefined();
  });

  it("queued-only fields are the formats and the declared upload", () => {
    const queuedOnly = Object.keys(SETTABLE_FIELDS).filter((n) => fieldInfo(n)?.queuedOnly);
    expect(queuedOnly.sort()).toEqual(["container_format", "disk_format", "upload_sha256", "upload_size"]);
  });
});

describe("image JSON, from the catalogue", () => {
  it("shows exactly the catalogue's fields and the extra properties, valid against the catalogue, in every status", () => {
    for (const status of IMAGE_STATUSES) {
      for (const upload of [undefined, put, plan]) {
        const json = imageJson(full({ status }), upload);
        expect(Object.keys(json).sort()).toEqual([...SHOWN_FIELDS, "os_distro"].sort());
        expect(ImageJson.safeParse(json).error).toBeUndefined();
      }
    }
  });

  it("never shows Hangar's internal fields, even when an extra property map would carry one", () => {
    const json = imageJson(full()) as Record<string, unknown>;
    for (const name of [
      "multipart_upload_id",
      "multipart_started_at",
      "import_lease_until",
      "import_takeovers",
    ]) {
      expect(json, name).not.toHaveProperty(name);
    }
  });

  it("declares every shown field in /v2/schemas/image in Glance's dialect (nullable as type [null, T], no anyOf)", () => {
    expect(Object.keys(imageSchema().properties)).toEqual(SHOWN_FIELDS);
    for (const [name, p] of Object.entries(imageSchema().properties)) {
      expect(p, name).not.toHaveProperty("anyOf");
      expect(typeof p.description, name).toBe("string");
      expect(p.readOnly === true, name).toBe(READ_ONLY_FIELDS.has(name) && name !== "id");
      if (Array.isArray(p.type)) expect(p.type[0], name).toBe("null");
    }
    expect(imageSchema().properties.disk_format).toMatchObject({
      type: ["null", "string"],
      enum: [null, "raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "ami", "ari", "aki"],
    });
    expect(imageSchema().properties.size).toEqual({
      type: ["null", "integer"],
      minimum: 0,
      readOnly: true,
      description: "Size of image file in bytes",
    });
  });
});
