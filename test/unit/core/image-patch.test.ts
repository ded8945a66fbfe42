import { describe, expect, it } from "vitest";
import {
  ConflictError,
  ForbiddenError,
  InvalidRequestError,
  LimitExceededError,
} from "../../../functions/core/errors.ts";
import type { ImageRecord } from "../../../functions/core/image/image.ts";
import { applyImagePatch, type PatchOperation } from "../../../functions/core/image/patch.ts";
import { imageRecord } from "../fakes.ts";

const alice = { userId: "alice", projectId: "p-alice", roles: ["member"] };
const admin = { userId: "admin", projectId: "p-admin", roles: ["admin"] };
const base = imageRecord({
  id: "00000000-0000-4000-8000-000000000001",
  name: "n",
  status: "queued",
  owner: "p-alice",
  disk_format: null,
  container_format: null,
  size: null,
  tags: ["red"],
  properties: { os_distro: "debian" },
});
const NOW = "2026-02-02T00:00:00.000Z";
const patch = (ops: PatchOperation[], image: ImageRecord = base, caller = alice) =>
  applyImagePatch(image, ops, caller, { maxUploadSize: 1000, now: NOW });

describe("applyImagePatch", () => {
  it("replaces schema fields even when glanceclient says replace for absent ones, and adds extra properties", () => {
    const changes = patch([
      { op: "replace", path: "/name", value: "new" },
      { op: "replace", path: "/min_ram", value: 512 },
      { op: "add", path: "/hw_disk_bus", value: "virtio" },
      { op: "replace", path: "/tags", value: ["red", "blue", "red"] },
      { op: "replace", path: "/disk_format", value: "qcow2" },
    ]);
    expect(changes).toEqual({
      name: "new",
      min_ram: 512,
      tags: ["red", "blue"],
      disk_format: "qcow2",
      properties: { os_distro: "debian", hw_disk_bus: "virtio" },
      updated_at: NOW,
    });
  });

  it("applies operations in order and decodes JSON pointers", () => {
    const changes = patch([
      { op: "add", path: "/a~1b", value: "1" },
      { op: "remove", path: "/a~1b" },
      { op: "remove", path: "/os_distro" },
    ]);
    expect(changes.properties).toEqual({});
  });

  it("refuses read-only and reserved attributes with 403 and Glance's words", () => {
    for (const name of ["checksum", "os_hash_value", "id", "status", "size", "upload", "failure"]) {
      expect(() => patch([{ op: "replace", path: `/${name}`, value: "x" }]), name).toThrow(
        `Attribute '${name}' is read-only.`,
      );
    }
    expect(() => patch([{ op: "add", path: "/os_glance_import_task", value: "x" }])).toThrow(/reserved/);
    expect(() => patch([{ op: "add", path: "/deleted", value: "x" }])).toThrow(/reserved/);
  });

  it("remove: a core property is 403, a missing extra property 409; replace of a missing extra property is 409", () => {
    expect(() => patch([{ op: "remove", path: "/name" }])).toThrow(ForbiddenError);
    expect(() => patch([{ op: "remove", path: "/nope" }])).toThrow(ConflictError);
    expect(() => patch([{ op: "replace", path: "/nope", value: "x" }])).toThrow(ConflictError);
  });

  it("validates values: types, enums, extra properties are strings", () => {
    expect(() => patch([{ op: "replace", path: "/min_ram", value: "lots" }])).toThrow(InvalidRequestError);
    expect(() => patch([{ op: "replace", path: "/disk_format", value: "bogus" }])).toThrow(/disk_format/);
    expect(() => patch([{ op: "add", path: "/k", value: 4 }])).toThrow(/strings/);
    expect(() => patch([{ op: "add", path: "/k" }])).toThrow(/needs a value/);
    expect(() => patch([{ op: "add", path: "/a/b", value: "x" }])).toThrow(/JSON pointer/);
    expect(() => patch([{ op: "add", path: "/upload_size", value: 1001 }])).toThrow(InvalidRequestError);
  });

  it("public needs an admin; shared, private and community are the owner's choice", () => {
    expect(() => patch([{ op: "replace", path: "/visibility", value: "public" }])).toThrow(
      "You are not authorized to complete publicize_image action.",
    );
    expect(patch([{ op: "replace", path: "/visibility", value: "public" }], base, admin).visibility).toBe(
      "public",
    );
    for (const v of ["private", "community", "shared"]) {
      expect(patch([{ op: "replace", path: "/visibility", value: v }]).visibility).toBe(v);
    }
    expect(() => patch([{ op: "replace", path: "/owner", value: "p-bob" }])).toThrow(ForbiddenError);
    expect(patch([{ op: "replace", path: "/owner", value: "p-bob" }], base, admin).owner).toBe("p-bob");
  });

  it("formats change only while queued; tag and property counts are bounded (413)", () => {
    const active = { ...base, status: "active" as const };
    expect(() => patch([{ op: "replace", path: "/disk_format", value: "raw" }], active)).toThrow(
      "Attribute disk_format can be only replaced for a queued image.",
    );
    const tags = Array.from({ length: 129 }, (_, i) => `t${i}`);
    expect(() => patch([{ op: "replace", path: "/tags", value: tags }])).toThrow(LimitExceededError);
    const many = Object.fromEntries(Array.from({ length: 128 }, (_, i) => [`k${i}`, "v"]));
    expect(() =>
      patch([{ op: "add", path: "/one_more", value: "v" }], { ...base, properties: many }),
    ).toThrow(LimitExceededError);
  });
});
