// The browser at /ui/ end to end: the real binary, seeded over HTTP, driven in headless
// Chromium. Run with `node --test tests/ui/` after building the binary
// (ARTIFACTSTORE_BIN, default target/debug/artifactstore); UI_SCREENSHOTS=docs/ui
// also takes the README's pictures.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { startServer, client, newToken } from "./server.mjs";
import { launch, screenshot } from "./browser.mjs";
import { run, binary, CANARY } from "./fixtures.mjs";

const NAME = "/ui/ci/open-cmis-tck";
const [V1, V2, V3] = ["2026-11-28.1", "2026-11-29.1", "2026-11-29.2"];
let server;
let browser;
const stopping = [];

before(async () => {
  server = await startServer();
  stopping.push(server);
  const c = client(server);
  await c.publish(`ci/open-cmis-tck/${V1}`, run(1), { branch: "main" });
  await c.publish(`ci/open-cmis-tck/${V2}`, run(2), { branch: "dev" });
  await c.publish(`ci/open-cmis-tck/${V3}`, run(3), { branch: "main", pipeline: "1187" });
  await c.publish("ci/nightly/1", { "log.txt": ["night 1\n", "text/plain"] }, { branch: "main" });
  await c.publish("releases/app/1.0.0", { "app.tar": [binary, "application/x-tar"] }, {});
  await c.publish("qa/cmis-tck/7", { "summary.md": ["# ok\n", "text/markdown"] }, {});
  browser = await launch();
});

after(async () => {
  await browser?.close();
  for (const s of stopping) await s.stop();
});

/** The rows of the versions table, by version. */
async function versionRows(page) {
  await page.locator("table.versions tbody tr[data-version]").first().waitFor();
  return page.locator("table.versions tbody tr[data-version]").evaluateAll((rows) => rows.map((r) => r.dataset.version));
}

test("browses from the namespaces to a file, and every page is a URL that survives a reload", async () => {
  const page = await browser.page(server.origin);
  await page.goto(`${server.url}/`);
  assert.equal(new URL(page.url()).pathname, "/ui/", "/ leads to the browser");
  const namespaces = page.locator("main ul.cards a");
  await namespaces.first().waitFor();
  assert.deepEqual(await namespaces.allTextContents(), ["ci", "qa", "releases"]);
  assert.equal(await page.getByRole("button", { name: "More namespaces" }).isVisible(), false, "one page only");
  await page.locator("#activity-list li").first().waitFor();
  await screenshot(page, "namespaces");

  await page.getByRole("link", { name: "ci", exact: true }).click();
  await page.getByRole("heading", { level: 1, name: "ci" }).waitFor();
  const latest = page.locator("tbody tr", { hasText: "open-cmis-tck" }).locator("td").first();
  await latest.getByRole("link", { name: V3 }).waitFor();

  await page.getByRole("link", { name: "open-cmis-tck", exact: true }).click();
  assert.deepEqual(await versionRows(page), [V3, V2, V1]);
  const v3 = page.locator(`tr[data-version="${V3}"]`);
  await v3.locator("td.num", { hasText: "7" }).waitFor();
  assert.match(await v3.innerText(), /complete\s+branch=main\s*pipeline=1187\s+7\s+\d+ KiB/);
  await screenshot(page, "versions");

  // Filtered by label, from the form; the filter is part of the URL.
  await page.getByLabel("Label").fill("branch=main");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(/label=branch%3Dmain/);
  await page.waitForFunction(() => document.querySelectorAll("table.versions tbody tr[data-version]").length === 2);
  assert.deepEqual(await versionRows(page), [V3, V1]);

  await page.getByRole("link", { name: V3, exact: true }).click();
  await page.getByRole("heading", { level: 1, name: `open-cmis-tck @ ${V3}` }).waitFor();
  const files = page.locator("table.files tbody tr[data-path] th a");
  await files.first().waitFor(); // the file table comes after the compare form's versions
  assert.deepEqual(await files.allTextContents(),
    ["app.bin", "build.log", "extra-3.log", "cmis-summary.md", "index.html", "start.png", "results.json"]);
  assert.match(await page.locator("table.files").innerText(), /application\/octet-stream/);
  const commands = await page.locator(".command pre").allTextContents();
  assert.ok(commands.some((c) => c.includes(`artifactstore --server ${server.origin} get ci/open-cmis-tck@${V3} -o open-cmis-tck-${V3}/`)), commands.join("\n"));
  assert.ok(commands.some((c) => c === `curl -fL -o open-cmis-tck-${V3}.tar '${server.origin}/v1/artifacts/ci/open-cmis-tck/${V3}?format=tar'`), commands.join("\n"));
  await screenshot(page, "version");

  await page.getByRole("link", { name: "build.log", exact: true }).click();
  const lines = page.locator("ol.lines li");
  await lines.first().waitFor();
  assert.equal(await lines.count(), 44);
  assert.equal(await lines.first().textContent(), "[0001] step 1: ok", "terminal colours dropped");
  assert.equal(await lines.last().textContent(), "BUILD SUCCESSFUL");

  await page.reload();
  await page.getByRole("heading", { level: 1, name: "build.log" }).waitFor();
  assert.equal(new URL(page.url()).pathname, `${NAME}/${V3}/logs/build.log`);
  await page.locator("ol.lines li").first().waitFor();

  await page.goto(`${server.url}${NAME}/${V3}/logs/nope.log`);
  await page.getByRole("alert").getByText(`ci/open-cmis-tck@${V3} has no file logs/nope.log`).waitFor();
  await page.close();
});

test("pages through the versions of a name, newest first", async () => {
  const c = client(server);
  for (let n = 1; n <= 30; n++) await c.publish(`ci/many/${n}`, { "f.txt": [`${n}\n`, "text/plain"] }, { branch: n % 3 ? "dev" : "main" });
  const page = await browser.page(server.origin);
  await page.goto(`${server.url}/ui/ci/many`);
  const first = await versionRows(page);
  assert.equal(first.length, 25);
  assert.deepEqual(first.slice(0, 2), ["30", "29"]);
  await page.getByRole("link", { name: "Older →" }).click();
  await page.waitForURL(/cursor=/);
  await page.waitForFunction(() => document.querySelectorAll("table.versions tbody tr[data-version]").length === 5);
  assert.deepEqual(await versionRows(page), ["5", "4", "3", "2", "1"]);
  await page.getByRole("link", { name: "← Newest" }).click();
  await page.waitForFunction(() => document.querySelector("table.versions tbody tr")?.dataset.version === "30");
  // A label chip filters by that label.
  await page.locator('tr[data-version="30"] a.chip', { hasText: "branch=main" }).click();
  await page.waitForFunction(() => document.querySelectorAll("table.versions tbody tr[data-version]").length === 10);
  assert.equal(await page.getByLabel("Label").inputValue(), "branch=main");
  await page.close();
});

test("renders Markdown as text and structure, never as markup", async () => {
  const page = await browser.page(server.origin);
  await page.goto(`${server.url}${NAME}/${V3}/reports/cmis-summary.md`);
  const md = page.locator(".md");
  await md.getByRole("heading", { name: "CMIS TCK summary" }).waitFor();
  assert.equal(await md.locator("h2").first().textContent(), "CMIS TCK summary");
  assert.equal(await md.locator("table tbody tr").count(), 2);
  assert.equal(await md.locator("strong").first().textContent(), "OpenCMIS TCK");
  assert.equal(await md.locator("li.task input[checked]").count(), 1);
  assert.equal(await md.locator("pre code").textContent(), "artifactstore get ci/open-cmis-tck@latest -o out");
  // The attempts at markup stay text; no script, image or javascript: link appears.
  assert.match(await md.innerText(), /<script>document\.title = "owned"<\/script>/);
  assert.match(await md.innerText(), /<img src=x onerror="alert\(1\)">/);
  assert.equal(await md.locator("script, img, iframe").count(), 0);
  assert.equal(await page.locator('a[href^="javascript:"]').count(), 0);
  assert.notEqual(await page.title(), "owned");
  // A relative link opens the file of the same version; an http(s) one leaves safely.
  assert.equal(await md.getByRole("link", { name: "the build log" }).getAttribute("href"), `${NAME}/${V3}/logs/build.log`);
  assert.match(await md.getByRole("link", { name: "spec" }).getAttribute("rel"), /noopener/);
  await screenshot(page, "markdown");

  await page.getByRole("button", { name: "Source" }).click();
  await page.locator("ol.lines li", { hasText: "# CMIS TCK summary" }).waitFor();
  assert.deepEqual(browser.dialogs, [], "no script of the file ran");
  await page.close();
});

test("shows an HTML report in a sandboxed frame that cannot read the page", async () => {
  const page = await browser.page(server.origin);
  await page.goto(`${server.url}/ui/`);
  // What a report's script would want: the page's storage, cookies and token.
  await page.evaluate((canary) => {
    sessionStorage.setItem("canary", canary);
    localStorage.setItem("canary", canary);
    document.cookie = `canary=${canary}; path=/; SameSite=Strict`;
  }, CANARY);
  await page.goto(`${server.url}${NAME}/${V3}/reports/index.html`);
  const frame = page.locator("iframe.report");
  await frame.waitFor();
  assert.equal(await frame.getAttribute("sandbox"), "allow-scripts", "no allow-same-origin");
  const report = page.frameLocator("iframe.report");
  await report.getByRole("heading", { name: "CMIS TCK report, run 3" }).waitFor();
  assert.equal(await report.locator(".pass").textContent(), "412 tests passed.");
  // Its script ran (a report may draw with script), in an opaque origin: the page's
  // storage, cookies and token were out of its reach.
  await report.locator("#stolen", { hasText: "session blocked" }).waitFor();
  const stolen = await report.locator("#stolen").textContent();
  assert.ok(!stolen.includes(CANARY), `the report read: ${stolen}`);
  for (const what of ["local blocked", "cookie blocked", "parent blocked"]) {
    assert.ok(stolen.includes(what), `${what} missing from: ${stolen}`);
  }
  // Its document is of an opaque origin, not this page's: neither can reach into the other.
  assert.equal(await page.evaluate(() => document.querySelector("iframe.report").contentDocument), null);
  await screenshot(page, "report");
  assert.ok(!browser.requests.some((r) => r.url.includes(CANARY)), "nothing sent the canary anywhere");
  await page.evaluate(() => localStorage.clear());
  await page.close();
});

test("previews JSON pretty-printed and images, and offers large files as downloads", async () => {
  const page = await browser.page(server.origin);
  await page.goto(`${server.url}${NAME}/${V3}/results.json`);
  await page.locator("ol.lines li").first().waitFor();
  assert.deepEqual((await page.locator("ol.lines li").allTextContents()).slice(0, 3), ["{", '  "suite": "cmis",', '  "passed": 403,']);
  await page.goto(`${server.url}${NAME}/${V3}/screenshots/start.png`);
  const img = page.getByRole("img", { name: "Preview of start.png" });
  await img.waitFor();
  await page.waitForFunction(() => document.querySelector(".image img")?.naturalWidth === 96);
  assert.match(await img.getAttribute("src"), /^blob:/);

  const big = "x".repeat(3 << 20);
  await client(server).publish("ci/big/1", { "huge.log": [big, "text/plain"] }, {});
  await page.goto(`${server.url}/ui/ci/big/1/huge.log`);
  await page.getByText("previews stop at 2.0 MiB").waitFor();
  await page.getByRole("link", { name: "Download instead" }).waitFor();
  await page.getByRole("button", { name: "Show the first 256 KiB" }).click();
  await page.locator("ol.lines li").first().waitFor();
  assert.equal((await page.locator("ol.lines li").first().textContent()).length, 256 << 10);
  await page.close();
});

test("compares two versions: files added, removed and changed", async () => {
  const page = await browser.page(server.origin);
  await page.goto(`${server.url}${NAME}`);
  await versionRows(page);
  await page.getByLabel(`Select ${V1} to compare`).check();
  await page.getByLabel(`Select ${V3} to compare`).check();
  await page.getByRole("button", { name: "Compare selected" }).click();
  await page.waitForURL((u) => u.pathname === `${NAME}/-/compare` && u.search === `?from=${V1}&to=${V3}`);
  const summary = page.locator("p.summary");
  await summary.waitFor();
  assert.match(await summary.innerText(), /1 added, 1 removed, 4 changed, 2 unchanged/);
  assert.deepEqual(await page.locator("section.added tbody th").allTextContents(), ["logs/extra-3.log"]);
  assert.deepEqual(await page.locator("section.removed tbody th").allTextContents(), ["logs/extra-1.log"]);
  const changed = await page.locator("section.changed tbody th a:not(.muted)").allTextContents();
  assert.deepEqual(changed.sort(), ["logs/build.log", "reports/cmis-summary.md", "reports/index.html", "results.json"]);
  await screenshot(page, "compare");
  await page.close();
});

test("a new run appears in the versions list and the activity panel without a reload", async () => {
  const page = await browser.page(server.origin);
  await page.goto(`${server.url}/ui/ci/nightly`);
  assert.deepEqual(await versionRows(page), ["1"]);
  await page.locator("#activity-list li").first().waitFor();
  await page.evaluate(() => (window.stillTheSamePage = true));
  await client(server).publish("ci/nightly/2", { "log.txt": ["night 2\n", "text/plain"] }, { branch: "main" });
  await page.locator('tr[data-version="2"].new').waitFor();
  assert.deepEqual(await versionRows(page), ["2", "1"]);
  await page.locator("#activity-list li.fresh", { hasText: "ci/nightly@2" }).first().waitFor();
  assert.equal(await page.evaluate(() => window.stillTheSamePage), true, "no reload");
  await page.close();
});

test("downloads a file whose bytes are the ones published", async () => {
  const page = await browser.page(server.origin);
  await page.goto(`${server.url}${NAME}/${V3}`);
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("link", { name: "Download bundle/app.bin" }).click(),
  ]);
  assert.equal(download.suggestedFilename(), "app.bin");
  assert.ok(readFileSync(await download.path()).equals(binary));
  await page.close();
});

test("signs in with a token and shows only what it grants; anonymous sees the public namespace", async () => {
  const writer = newToken("writer", ["*"], ["read", "write", "complete"]);
  const reader = newToken("team-a-reader", ["team-a"], ["read"]);
  const auth = await startServer({
    config: `[auth]\nanonymous = [{ namespaces = ["public"], permissions = ["read"] }]\n\n${writer.config}\n${reader.config}`,
  });
  stopping.push(auth);
  const w = client(auth, writer.token);
  await w.publish("public/site/1", { "readme.md": ["# Public\n", "text/markdown"] }, {});
  await w.publish("team-a/app/1", { "app.bin": [binary, "application/octet-stream"] }, { branch: "main" });
  await w.publish("team-b/app/1", { "secret.txt": ["team b only\n", "text/plain"] }, {});

  const page = await browser.page(auth.origin);
  await page.goto(`${auth.url}/ui/`);
  const namespaces = page.locator("main ul.cards a");
  await namespaces.first().waitFor();
  assert.deepEqual(await namespaces.allTextContents(), ["public"]);

  await page.getByRole("link", { name: "Sign in" }).click();
  await page.getByLabel("Bearer token").fill("ast_not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Not signed in").waitFor();
  await screenshot(page, "signin");
  await page.getByLabel("Bearer token").fill(reader.token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll("main ul.cards a")].map((a) => a.textContent).join() === "team-a");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("artifactstore.token")), reader.token);
  assert.equal(await page.evaluate(() => localStorage.length), 0);

  // Signed in, a download carries the token in its header (a link could not).
  await page.goto(`${auth.url}/ui/team-a/app/1`);
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("link", { name: "Download app.bin" }).click(),
  ]);
  assert.ok(readFileSync(await download.path()).equals(binary));
  await page.goto(`${auth.url}/ui/team-b`);
  await page.getByText("The token you signed in with does not grant this.").waitFor();

  const mine = browser.requests.filter((r) => r.origin === auth.origin);
  assert.ok(mine.some((r) => r.headers.authorization === `Bearer ${reader.token}`), "sent as Authorization");
  assert.ok(!mine.some((r) => r.url.includes(reader.token.slice(4, 20))), "never in a URL");

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForFunction(() => [...document.querySelectorAll("main ul.cards a")].map((a) => a.textContent).join() === "public");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("artifactstore.token")), null);
  await page.close();
});

test("works with the keyboard alone and at a phone's width", async () => {
  const page = await browser.page(server.origin);
  await page.goto(`${server.url}/ui/`);
  await page.locator("main ul.cards a").first().waitFor();
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
  let found = false;
  for (let i = 0; i < 8 && !found; i++) {
    await page.keyboard.press("Tab");
    found = await page.evaluate(() => document.activeElement.textContent === "qa");
  }
  assert.ok(found, "the namespace links are reached by Tab");
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, "none", "focus is visible");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { level: 1, name: "qa" }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.outerHTML), '<h1 tabindex="-1">qa</h1>', "focus moves to the new page");
  await page.close();

  const phone = await browser.page(server.origin, { width: 390, height: 844 });
  for (const [path, table] of [[`${NAME}/${V3}`, "table.files"], [NAME, "table.versions"]]) {
    await phone.goto(`${server.url}${path}`);
    await phone.locator(table).first().waitFor();
    // Every row's details are in (the widest the page gets).
    await phone.waitForFunction(() => ![...document.querySelectorAll("td")].some((td) => td.textContent === "…"));
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${path}: the page is ${overflow}px wider than the screen`);
  }
  await screenshot(phone, "phone");
  await phone.close();
});

test("with --no-ui the server serves no browser", async () => {
  const off = await startServer({ args: ["--no-ui"] });
  stopping.push(off);
  for (const path of ["/", "/ui/", "/ui/_/app.js"]) {
    const resp = await fetch(`${off.url}${path}`, { redirect: "manual" });
    assert.equal(resp.status, 404, path);
  }
  assert.equal((await fetch(`${off.url}/v1/artifacts`)).status, 200);
});

test("no request of any page left the server's origin", () => {
  assert.ok(browser.requests.length > 50, `only ${browser.requests.length} requests recorded`);
  const away = browser.requests.filter((r) => new URL(r.url).origin !== r.origin);
  assert.deepEqual(away.map((r) => r.url), []);
});
