import { randomUUID } from "node:crypto";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { createImageService } from "../../../functions/core/images.ts";
import type { WebDownloadJob } from "../../../functions/core/ports.ts";
import { createQuotaService } from "../../../functions/core/quota-service.ts";
import { createMultipartUploads } from "../../../functions/core/uploads/multipart.ts";
import { MIB } from "../../../functions/core/uploads/plan.ts";
import { createApp } from "../../../functions/http/app.ts";
import { createTokenVerifier } from "../../../functions/http/auth.ts";
import {
  fixedClock,
  MemoryImages,
  MemoryMembers,
  MemoryMultipartUploads,
  MemoryObjects,
  MemoryQuota,
  silentLog,
} from "../fakes.ts";

/**
 * The HTTP app over in-memory fakes, with a token minter and a recording web-download dispatcher. Declared
 * uploads above 8 MiB get a multipart plan (5 MiB parts), so the multipart routes are there too.
 */
export async function testApp() {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const token = (sub: string, project: string, roles: string[]) =>
    new SignJWT({ sub, project_id: project, roles })
      .setProtectedHeader({ alg: "ES256" })
      .setIssuer("test")
      .setAudience("hangar")
      .setExpirationTime("1h")
      .sign(privateKey);
  const images = new MemoryImages();
  const members = new MemoryMembers();
  images.members = members;
  const objects = new MemoryObjects();
  const jobs: WebDownloadJob[] = [];
  const clock = fixedClock();
  const storage = new MemoryMultipartUploads(objects, clock);
  const multipart = createMultipartUploads({
    images,
    objects,
    uploads: storage,
    clock,
    log: silentLog,
    threshold: 8 * MIB,
    minPartSize: 5 * MIB,
    partUrlTtlSeconds: 600,
    abandonAfterSeconds: 24 * 3600,
  });
  const resolveTable: Record<string, string[]> = {
    "images.example": ["93.184.216.34"],
    "evil.example": ["10.0.0.7"],
  };
  const service = createImageService({
    images,
    objects,
    members,
    clock,
    multipart,
    log: silentLog,
    newId: randomUUID,
    uploadUrlTtlSeconds: 600,
    downloadUrlTtlSeconds: 60,
    webDownload: {
      dispatcher: { dispatch: async (job) => void jobs.push(job) },
      resolve: async (host) => {
        const a = resolveTable[host];
        if (!a) throw new Error("ENOTFOUND");
        return a;
      },
      allowLoopback: false,
      leaseSeconds: 900,
    },
  });
  const quotas = createQuotaService({ quota: new MemoryQuota(images), images, objects, log: silentLog });
  const app = createApp({
    images: service,
    quotas,
    uploads: multipart,
    verifyToken: createTokenVerifier({
      issuer: "test",
      audience: "hangar",
      publicJwk: JSON.stringify(await exportJWK(publicKey)),
    }),
    log: silentLog,
    maxUploadSize: 5 * 1024 ** 3,
    policy: {
      preferredFormat: "raw",
      acceptedFormats: ["raw", "iso"],
      maxVirtualSize: 2 ** 40,
      maxGzipRatio: 64,
      maxUploadSize: 5 * 1024 ** 3,
      webDownload: { enabled: true, maxBytes: 1024, timeoutSeconds: 60 },
    },
  });
  /** A request with glanceclient's habits: X-Auth-Token, and JSON bodies as strings. */
  const call = (
    method: string,
    path: string,
    tok: string,
    body?: unknown,
    contentType = "application/json",
  ) =>
    app.request(path, {
      method,
      headers: { "X-Auth-Token": tok, ...(body !== undefined ? { "Content-Type": contentType } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  return { app, images, members, objects, storage, jobs, token, call };
}

export const PATCH_TYPE = "application/openstack-images-v2.1-json-patch";
