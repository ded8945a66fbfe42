/**
 * Takes the README's screenshot of the browser page (docs/images/ui.png): starts a local stack of its
 * own (temporary HANGAR_HOME, free loopback ports), uploads a qcow2 through the page in headless Chromium
 * until it is active, offers a qcow2 with a backing file (refused), and photographs the page.
 *
 *   npm run screenshot:ui            # HANGAR_CHROMIUM names another Chromium than /usr/bin/chromium
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { freePort } from "../infra/local/services.ts";
import { startStack } from "../infra/local/stack.ts";
import { qemuImg } from "../test/fixtures/generate-tools.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "docs", "images", "ui.png");

const home = await mkdtemp(join(tmpdir(), "hangar-screenshot-"));
const stack = await startStack({
  home,
  cacheDir: process.env.HANGAR_CACHE ? resolve(process.env.HANGAR_CACHE) : join(root, ".hangar", "cache"),
  apiPort: await freePort(),
  s3Port: await freePort(),
  dynamodbPort: await freePort(),
  reset: true,
  durableEvents: false,
  sweepIntervalMs: 0,
  redriveIntervalMs: 0,
});
const browser = await chromium.launch({
  executablePath: process.env.HANGAR_CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
});
try {
  const disk = join(home, "demo.qcow2");
  qemuImg("create", "-q", "-f", "qcow2", disk, "256M");
  const base = join(home, "base.raw");
  await writeFile(base, new Uint8Array(1024 * 1024));
  const backed = join(home, "snapshot.qcow2");
  qemuImg("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", backed);

  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await page.goto(`${stack.info.apiUrl}/ui/#token=${stack.info.tokens.alice}`);
  await page.locator("#app:not([hidden])").waitFor();
  await page.locator("[data-testid=file-input]").setInputFiles(disk);
  await page
    .locator("[data-testid=upload] [data-testid=image-status]", { hasText: /^active$/ })
    .waitFor({ timeout: 120_000 });
  await page.locator("[data-testid=file-input]").setInputFiles(backed);
  await page.locator("[data-testid=inspection][data-verdict=refused]").waitFor();
  await page.locator("#refresh").click();
  // The dashboard's notice of the refusal fades after 6 s; the card keeps it.
  await page.waitForTimeout(7000);
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await stack.stop();
  await rm(home, { recursive: true, force: true });
}
