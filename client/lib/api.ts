import * as z from "zod";
import { whyRefused } from "./token.ts";

/** An error answer from Hangar's API, with Glance's `reason` code when the body has one. */
export class HangarApiError extends Error {
  override name = "HangarApiError";
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

const SingleUpload = z.object({
  method: z.enum(["PUT", "POST"]),
  url: z.string(),
  headers: z.record(z.string(), z.string()),
  expires_at: z.string(),
});

const MultipartUpload = z.object({
  method: z.literal("multipart"),
  part_size: z.number().int().positive(),
  part_count: z.number().int().positive(),
  expires_at: z.string(),
  parts_url: z.string(),
  complete_url: z.string(),
  cancel_url: z.string(),
});

/** The fields of an image the client relies on; everything else passes through. */
export const ImageSchema = z
  .object({
    id: z.string(),
    name: z.string().nullable().optional(),
    status: z.string(),
    size: z.number().nullable().optional(),
    checksum: z.string().nullable().optional(),
    os_hash_algo: z.string().nullable().optional(),
    os_hash_value: z.string().nullable().optional(),
    disk_format: z.string().nullable().optional(),
    upload_size: z.number().nullable().optional(),
    upload_sha256: z.string().nullable().optional(),
    upload: z.union([SingleUpload, MultipartUpload]).nullable().optional(),
    failure: z.object({ reason: z.string(), message: z.string() }).nullable().optional(),
  })
  .passthrough();
export type Image = z.infer<typeof ImageSchema>;
export type MultipartPlan = z.infer<typeof MultipartUpload>;
export type SingleLink = z.infer<typeof SingleUpload>;

const PartsList = z.object({
  part_size: z.number(),
  part_count: z.number(),
  parts: z.array(z.object({ part_number: z.number(), size: z.number(), etag: z.string() })),
});
export type StoredPart = z.infer<typeof PartsList>["parts"][number];

const SignedParts = z.object({
  parts: z.array(
    z.object({
      part_number: z.number(),
      size: z.number(),
      method: z.string(),
      url: z.string(),
      headers: z.record(z.string(), z.string()),
      expires_at: z.string(),
    }),
  ),
});
export type SignedPart = z.infer<typeof SignedParts>["parts"][number];

/** Hangar's policy block of `/v2/info/import`: what the importer does with each format. */
const ImportPolicy = z.object({
  preferred_format: z.string(),
  accepted_formats: z.array(z.string()),
  max_virtual_size: z.number(),
  max_gzip_ratio: z.number(),
  max_upload_size: z.number().optional(),
});
export type ImportPolicy = z.infer<typeof ImportPolicy>;
const ImportInfo = z.object({ hangar: ImportPolicy.optional() }).passthrough();

/** What `fetch`'s cause codes mean to someone who typed a URL. */
const UNREACHABLE: Record<string, string> = {
  ECONNREFUSED: "connection refused: nothing listens there (is the stack running, on that port?)",
  ENOTFOUND: "no such host",
  EAI_AGAIN: "the host name could not be resolved now",
  ETIMEDOUT: "the connection timed out",
  ECONNRESET: "the connection was reset",
  EHOSTUNREACH: "no route to the host",
};

const ImageList = z.object({ images: z.array(ImageSchema), next: z.string().optional() });

/** Fields a client sets when creating an image: Glance's, Hangar's upload declarations, string properties. */
export type NewImage = Record<string, unknown>;

/** A thin client of Hangar's Glance v2 API that follows the links its responses carry. */
export class HangarClient {
  constructor(
    readonly apiUrl: string,
    private readonly token: string,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {}

  private async request(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set("x-auth-token", this.token);
    if (typeof init.body === "string") headers.set("content-type", "application/json");
    // Links in responses are relative to the API root, which may carry a path (an API Gateway stage).
    const url = /^https?:\/\//.test(path) ? path : `${this.apiUrl}${path}`;
    let res: Response;
    try {
      res = await this.fetchImpl(url, { redirect: "manual", ...init, headers });
    } catch (err) {
      // fetch says only "fetch failed"; the cause names the real problem (refused, DNS, TLS).
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const code = cause?.code ?? "";
      const why =
        UNREACHABLE[code] ??
        (cause?.message === "bad port" ? "fetch refuses that port number (one browsers block)" : undefined) ??
        cause?.message ??
        String(err);
      const where = url.split("?")[0];
      throw new HangarApiError(0, "UNREACHABLE", `cannot reach ${where}: ${why}${code ? ` (${code})` : ""}`);
    }
    if (res.status >= 400) {
      const text = await res.text();
      let reason = "HTTP_ERROR";
      let message = `${res.status} ${res.statusText}: ${text.slice(0, 300)}`;
      try {
        const body = JSON.parse(text) as { error?: { message?: string; reason?: string } };
        if (body.error?.message) message = body.error.message;
        if (body.error?.reason) reason = body.error.reason;
      } catch {
        // Not Hangar's error shape (a proxy, a gateway): the status line and body excerpt stand.
      }
      // The API says only whether a refused token expired or is not valid; the client can read its own
      // token's claims to say when it expired or what to check.
      if (res.status === 401) message = `${message.replace(/\.$/, "")} (${whyRefused(this.token)})`;
      throw new HangarApiError(res.status, reason, message);
    }
    return res;
  }

  private async json<T>(schema: z.ZodType<T>, path: string, init?: RequestInit): Promise<T> {
    const res = await this.request(path, init);
    return schema.parse(await res.json());
  }

  createImage(fields: NewImage): Promise<Image> {
    return this.json(ImageSchema, "/v2/images", { method: "POST", body: JSON.stringify(fields) });
  }

  /** The operator's import policy, or undefined when the API does not publish one. */
  async importPolicy(): Promise<ImportPolicy | undefined> {
    return (await this.json(ImportInfo, "/v2/info/import")).hangar;
  }

  getImage(id: string): Promise<Image> {
    return this.json(ImageSchema, `/v2/images/${encodeURIComponent(id)}`);
  }

  /** Every image the caller sees, following `next` links. */
  async listImages(): Promise<Image[]> {
    const out: Image[] = [];
    let path: string | undefined = "/v2/images?limit=1000";
    while (path) {
      const page: z.infer<typeof ImageList> = await this.json(ImageList, path);
      out.push(...page.images);
      path = page.next;
    }
    return out;
  }

  async deleteImage(id: string): Promise<void> {
    await this.request(`/v2/images/${encodeURIComponent(id)}`, { method: "DELETE" });
  }

  /** The presigned URL the API redirects a download to. */
  async downloadUrl(id: string): Promise<string> {
    const res = await this.request(`/v2/images/${encodeURIComponent(id)}/file`);
    const location = res.headers.get("location");
    await res.body?.cancel();
    if (!location) throw new HangarApiError(res.status, "NO_REDIRECT", "The API gave no download location.");
    return new URL(location, `${this.apiUrl}/`).href;
  }

  listParts(plan: MultipartPlan): Promise<z.infer<typeof PartsList>> {
    return this.json(PartsList, plan.parts_url);
  }

  async signParts(plan: MultipartPlan, partNumbers: number[]): Promise<SignedPart[]> {
    const out = await this.json(SignedParts, plan.parts_url, {
      method: "POST",
      body: JSON.stringify({ parts: partNumbers }),
    });
    return out.parts;
  }

  async completeUpload(plan: MultipartPlan, uploadSha256?: string): Promise<void> {
    const res = await this.request(plan.complete_url, {
      method: "POST",
      body: JSON.stringify(uploadSha256 ? { upload_sha256: uploadSha256 } : {}),
    });
    await res.body?.cancel();
  }

  async cancelUpload(plan: MultipartPlan): Promise<void> {
    const res = await this.request(plan.cancel_url, { method: "POST" });
    await res.body?.cancel();
  }
}
