// Debian's Chromium, headless, driven by playwright-core: a fresh profile each run, and
// every request each page makes recorded with the origin it must stay on.

import { chromium } from "playwright-core";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
export const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
/** UI_SCREENSHOTS=docs/ui writes the pages' pictures there (relative to the repository). */
const shots = process.env.UI_SCREENSHOTS ? resolve(repo, process.env.UI_SCREENSHOTS) : null;

export async function launch() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: apt-get install chromium (or set CHROMIUM_BIN)`);
  }
  const profile = mkdtempSync(join(tmpdir(), "artifactstore-chromium-"));
  // A persistent context is how playwright passes a profile directory of ours as
  // --user-data-dir: new and empty each run, removed at the end.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 800 },
    acceptDownloads: true,
    locale: "en-GB",
    timezoneId: "UTC",
  });
  const requests = [];
  const dialogs = [];
  return {
    requests,
    dialogs,
    /** A new tab (its own session storage) whose requests must all go to `origin`. */
    async page(origin, viewport) {
      const page = await context.newPage();
      if (viewport) await page.setViewportSize(viewport);
      page.setDefaultTimeout(15_000);
      page.on("request", (r) => requests.push({ url: r.url(), origin, headers: r.headers() }));
      page.on("dialog", (d) => {
        dialogs.push(d.message());
        d.dismiss().catch(() => {});
      });
      page.on("pageerror", (e) => console.error(`page error on ${page.url()}: ${e.message}`));
      return page;
    },
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export async function screenshot(page, name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  // Fonts and the last rows settle before the picture.
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, `${name}.png`) });
}
