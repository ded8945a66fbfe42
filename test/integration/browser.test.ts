import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ListMultipartUploadsCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { type Browser, type CDPSession, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pseudoRandomBytes, qemuImg } from "../fixtures/generate-tools.ts";
import { api, assertLoopback, getStack, mintToken, s3Client } from "./setup/stack.ts";

// The browser page (/ui/) in a real headless Chromium (Debian's, driven by playwright-core) against the
// shared local stack: bytes go from the page straight to MinIO, and the page shows what the API records.
const CHROMIUM = process.env.HANGAR_CHROMIUM ?? "/usr/bin/chromium";
const MiB = 1024 * 1024;

let browser: Browser;
let dir: string;
const files = { qcow2: "", raw: "", hostile: "", large: "" };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "hangar-browser-"));
  files.qcow2 = join(dir, "disk.qcow2");
  qemuImg("create", "-q", "-f", "qcow2", files.qcow2, "32M");
  files.raw = join(dir, "disk.raw");
  writeFileSync(files.raw, pseudoRandomBytes(3 * MiB, 17));
  // A qcow2 that reads another file of the host: the importer's "qcow2 backing file" check refuses it.
  const base = join(dir, "base.raw");
  writeFileSync(base, new Uint8Array(MiB));
  files.hostile = join(dir, "backed.qcow2");
  qemuImg("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", files.hostile);
  // Above the multipart threshold (64 MiB): a plan of 16 MiB parts, the last one shorter.
  files.large = join(dir, "large.raw");
  writeFileSync(files.large, pseudoRandomBytes(70 * MiB, 23));
  if (!existsSync(CHROMIUM))
    throw new Error(`no Chromium at ${CHROMIUM}: run node scripts/ensure-deps.mjs --test`);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  // Another project's public image, which the API lists to everyone and the page must leave out.
  const created = await api(
    "/v2/images",
    {
      method: "POST",
      body: JSON.stringify({
        name: "someone else's",
        visibility: "public",
        disk_format: "raw",
        container_format: "bare",
      }),
    },
    getStack().tokens.admin,
  );
  expect(created.status).toBe(201);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A member of a project of its own, so the page's list shows only this test's images. */
async function newMember(): Promise<{ token: string; project: string }> {
  const project = `browser-${randomUUID()}`;
  return { token: await mintToken({ sub: "pat", project_id: project, roles: ["member"] }), project };
}

/** The page, opened with the token in its fragment; every request it makes is recorded. */
async function openPage(token: string): Promise<{ page: Page; requests: { method: string; url: string }[] }> {
  const { apiUrl } = getStack();
  const page = await browser.newPage();
  const requests: { method: string; url: string }[] = [];
  page.on("request", (r) => {
    requests.push({ method: r.method(), url: r.url() });
    // Nothing but the stack: the page, its API and storage, all on loopback.
    if (!r.url().startsWith("data:")) assertLoopback(r.url());
  });
  await page.goto(`${apiUrl}/ui/#token=${token}`);
  await page.locator("#app:not([hidden])").waitFor();
  return { page, requests };
}

function card(page: Page, fileName: string) {
  return page.locator(`[data-testid=upload][data-file-name="${fileName}"]`);
}

/** Waits for the card's image to be `active` and returns its id and the md5 the page shows. */
async function activeOnPage(page: Page, fileName: string): Promise<{ id: string; md5: string }> {
  const c = card(page, fileName);
  await c.locator("[data-testid=image-status]", { hasText: /^active$/ }).waitFor({ timeout: 45_000 });
  return {
    id: (await c.getAttribute("data-image-id")) ?? "",
    md5: (await c.locator("[data-testid=image-checksum]").textContent()) ?? "",
  };
}

async function record(id: string, token: string): Promise<Record<string, unknown>> {
  const res = await api(`/v2/images/${id}`, {}, token);
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

describe("the browser page", () => {
  it("takes the token from the fragment, says whose project it is, and drops the token from the address", async () => {
    const { token, project } = await newMember();
    const { page } = await openPage(token);
    try {
      expect(await page.locator("[data-testid=identity]").textContent()).toBe(
        `pat in project ${project} (member)`,
      );
      expect(page.url()).toBe(`${getStack().apiUrl}/ui/`);
      expect(await page.evaluate("sessionStorage.getItem('hangar.token')")).toBe(token);
    } finally {
      await page.close();
    }
  });

  it("uploads a qcow2 and a raw image straight to storage and shows each active with the recorded md5", async () => {
    const { token } = await newMember();
    const { page, requests } = await openPage(token);
    try {
      await page.locator("[data-testid=file-input]").setInputFiles(files.qcow2);
      const qcow2 = await activeOnPage(page, "disk.qcow2");
      await page.locator("[data-testid=file-input]").setInputFiles(files.raw);
      const raw = await activeOnPage(page, "disk.raw");

      for (const [shown, format] of [
        [qcow2, "qcow2"],
        [raw, "raw"],
      ] as const) {
        const image = await record(shown.id, token);
        expect(image.status).toBe("active");
        expect(shown.md5).toMatch(/^[0-9a-f]{32}$/);
        expect(shown.md5).toBe(image.checksum);
        // The page inspected the file, and declared the sha256 it computed (verified on import).
        const inspection = card(page, `disk.${format}`).locator("[data-testid=inspection]");
        expect(await inspection.getAttribute("data-verdict")).toBe("ok");
        expect(await inspection.textContent()).toMatch(new RegExp(`^${format}\\b`));
        expect(image.upload_sha256).toMatch(/^[0-9a-f]{64}$/);
      }
      // The bytes went to storage, never to the API.
      const { apiUrl, s3Endpoint } = getStack();
      const puts = requests.filter((r) => r.method === "PUT");
      expect(puts.length).toBe(2);
      for (const put of puts) expect(put.url.startsWith(`${s3Endpoint}/`)).toBe(true);
      expect(requests.filter((r) => r.url.startsWith(apiUrl) && r.method === "PUT")).toEqual([]);
      // The project's list shows both, and only the project's own images (others' public ones are left out).
      await page.locator("#refresh").click();
      await expect.poll(() => page.locator("#images tbody tr[data-image-id]").count()).toBe(2);
      for (const { id } of [qcow2, raw])
        expect(await page.locator(`#images tr[data-image-id="${id}"]`).count()).toBe(1);
    } finally {
      await page.close();
    }
  }, 120_000);

  it("refuses an image with a backing file before anything is created or sent", async () => {
    const { token, project } = await newMember();
    const started = Date.now() - 1000;
    const { page, requests } = await openPage(token);
    const s3 = s3Client();
    try {
      await page.locator("[data-testid=file-input]").setInputFiles(files.hostile);
      const verdict = card(page, "backed.qcow2").locator("[data-testid=inspection]");
      await verdict.and(page.locator("[data-verdict=refused]")).waitFor({ timeout: 20_000 });
      expect(await verdict.getAttribute("data-check")).toBe("qcow2 backing file");
      expect(await verdict.textContent()).toContain("qcow2 backing file");
      // No create, no PUT: the project has no image and storage no upload for it.
      await page.waitForTimeout(500);
      expect(requests.filter((r) => r.method === "POST" || r.method === "PUT")).toEqual([]);
      const list = (await (await api("/v2/images", {}, token)).json()) as { images: { owner: string }[] };
      expect(list.images.filter((i) => i.owner === project)).toEqual([]);
      // Nor did anything else reach storage while the page looked at the file.
      const { bucket } = getStack();
      const staged = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "staging/" }));
      expect((staged.Contents ?? []).filter((o) => (o.LastModified?.getTime() ?? 0) >= started)).toEqual([]);
    } finally {
      s3.destroy();
      await page.close();
    }
  }, 60_000);

  it("resumes a multipart upload after a reload: the same file added again sends only the missing parts", async () => {
    const { token } = await newMember();
    const { page, requests } = await openPage(token);
    let cdp: CDPSession | undefined;
    try {
      // Parts 3 and later are held by the browser (never sent on): parts 1 and 2 reach storage, then
      // the page is reloaded in the middle of the upload.
      cdp = await page.context().newCDPSession(page);
      await cdp.send("Fetch.enable", {
        patterns: [3, 4, 5].flatMap((n) => [
          { urlPattern: `*partNumber=${n}&*`, requestStage: "Request" as const },
          { urlPattern: `*partNumber=${n}`, requestStage: "Request" as const },
        ]),
      });
      await page.locator("[data-testid=file-input]").setInputFiles(files.large);
      const c = card(page, "large.raw");
      await c.locator("[data-testid=image-id]").waitFor({ timeout: 30_000 });
      const id = (await c.getAttribute("data-image-id")) ?? "";
      const plan = (await record(id, token)).upload as { parts_url: string; part_count: number };
      expect(plan.part_count).toBe(5);
      const stored = async () => {
        const res = await api(plan.parts_url, {}, token);
        return ((await res.json()) as { parts: { part_number: number }[] }).parts.map((p) => p.part_number);
      };
      await expect.poll(stored, { timeout: 30_000, interval: 200 }).toEqual([1, 2]);

      await page.reload();
      await cdp.send("Fetch.disable");
      await page.locator("#app:not([hidden])").waitFor();
      expect(await stored()).toEqual([1, 2]);
      const before = requests.length;
      await page.locator("[data-testid=file-input]").setInputFiles(files.large);
      const shown = await activeOnPage(page, "large.raw");
      expect(shown.id).toBe(id);
      const sent = requests
        .slice(before)
        .filter((r) => r.method === "PUT")
        .map((r) => Number(new URL(r.url).searchParams.get("partNumber")))
        .sort();
      expect(sent).toEqual([3, 4, 5]);
      expect(requests.slice(before).some((r) => r.method === "GET" && r.url.endsWith(plan.parts_url))).toBe(
        true,
      );
      expect(await c.locator("[data-testid=parts]").textContent()).toBe("3 sent, 2 already in storage");
      const image = await record(id, token);
      expect(shown.md5).toBe(image.checksum);
      expect(image.size).toBe(70 * MiB);
      const s3 = s3Client();
      try {
        const uploads = await s3.send(
          new ListMultipartUploadsCommand({ Bucket: getStack().bucket, Prefix: `staging/${id}/upload` }),
        );
        expect(uploads.Uploads ?? []).toEqual([]);
      } finally {
        s3.destroy();
      }
    } finally {
      await cdp?.detach().catch(() => {});
      await page.close();
    }
  }, 120_000);
});
