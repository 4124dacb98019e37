// Drives the sidecar's trace viewer (GET /) in headless Debian Chromium with playwright-core.
//
//   NODE_PATH=<target/browser-node/node_modules> node scripts/browser/viewer_check.mjs \
//     <sidecar url> <failed trace id> <expected error text> <screenshot path>
//
// Checks: the list loads; filtering by "failed" shows only failed traces; "Download JSON" saves
// exactly those; a date range after every trace shows none; opening the failing trace shows the
// failing node's error message in the side panel; Esc closes it.
// Saves a screenshot (with the panel open). Exits 1 with a clear message on any failed check.
import { createRequire } from "node:module";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const [url, failedTrace, errorText, screenshot] = process.argv.slice(2);
if (!url || !failedTrace || !errorText || !screenshot) {
  console.error("usage: viewer_check.mjs <url> <failed trace id> <error text> <screenshot>");
  process.exit(2);
}
let chromium;
try {
  ({ chromium } = require("playwright-core"));
} catch (e) {
  console.error("viewer_check: cannot load playwright-core (run scripts/browser/setup.sh, set NODE_PATH): " + e.message);
  process.exit(2);
}

const TIMEOUT = 15000;
const userDataDir = mkdtempSync(join(tmpdir(), "viewer-check-"));
let context;
let step = "launch";
const consoleErrors = [];
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1400, height: 900 },
    acceptDownloads: true,
    timezoneId: "UTC",
    timeout: 60000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push("pageerror: " + e.message));

  step = "load the page";
  const resp = await page.goto(url, { waitUntil: "domcontentloaded" });
  if (!resp || resp.status() !== 200) throw new Error(`GET ${url} answered ${resp && resp.status()}`);

  step = "wait for the trace list";
  await page.waitForSelector('[data-testid="trace-list"][data-state="ready"]');
  const all = await page.$$eval('[data-testid="trace-row"]', (rows) =>
    rows.map((r) => ({ id: r.dataset.traceId, status: r.dataset.status })));
  if (!all.some((t) => t.id === failedTrace)) {
    throw new Error(`trace ${failedTrace} not listed; rows: ${JSON.stringify(all)}`);
  }
  const statuses = new Set(all.map((t) => t.status));
  if (!statuses.has("failed") || statuses.size < 2) {
    throw new Error(`expected failed and other traces before filtering; rows: ${JSON.stringify(all)}`);
  }

  step = "filter by failed";
  await page.selectOption('[data-testid="status-filter"]', "failed");
  await page.waitForSelector(
    '[data-testid="trace-list"][data-state="ready"][data-status-filter="failed"]');
  const failed = await page.$$eval('[data-testid="trace-row"]', (rows) =>
    rows.map((r) => ({ id: r.dataset.traceId, status: r.dataset.status })));
  if (failed.length === 0) throw new Error("no rows after filtering by failed");
  const wrong = failed.filter((t) => t.status !== "failed");
  if (wrong.length) throw new Error(`non-failed traces shown under "failed": ${JSON.stringify(wrong)}`);
  if (!failed.some((t) => t.id === failedTrace)) {
    throw new Error(`failing trace missing under "failed": ${JSON.stringify(failed)}`);
  }
  const info = await page.textContent('[data-testid="page-info"]');
  if (!/page 1 of 1 \(\d+ traces?\)/.test(info || "")) throw new Error(`page info reads ${JSON.stringify(info)}`);

  step = "Download JSON (export with the current filter)";
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click('[data-testid="download"]'),
  ]);
  if (download.suggestedFilename() !== "traces.json") {
    throw new Error(`download named ${download.suggestedFilename()}`);
  }
  const exported = JSON.parse(readFileSync(await download.path(), "utf8"));
  const exportedIds = exported.map((t) => t.id).sort();
  const failedIds = failed.map((t) => t.id).sort();
  if (JSON.stringify(exportedIds) !== JSON.stringify(failedIds) || exported.some((t) => t.status !== "failed")) {
    throw new Error(`export ${JSON.stringify(exportedIds)} does not match the failed list ${JSON.stringify(failedIds)}`);
  }

  step = "a date range after every trace shows none";
  await page.fill('[data-testid="from-filter"]', "2099-01-01T00:00:00");
  await page.waitForSelector('[data-testid="trace-list"][data-state="ready"][data-from^="2099-01-01T00:00"]');
  await page.waitForSelector('[data-testid="empty"]', { state: "visible" });
  const emptyInfo = await page.textContent('[data-testid="page-info"]');
  if (emptyInfo !== "page 1 of 1 (0 traces)") throw new Error(`page info reads ${JSON.stringify(emptyInfo)}`);
  await page.fill('[data-testid="from-filter"]', "");
  await page.waitForSelector('[data-testid="trace-list"][data-state="ready"][data-from=""]');
  await page.waitForSelector(`[data-testid="trace-row"][data-trace-id="${failedTrace}"]`);

  step = "open the failing trace";
  await page.click(`[data-testid="trace-row"][data-trace-id="${failedTrace}"] [data-testid="trace-open"]`);
  await page.waitForSelector(
    `[data-testid="trace-panel"][data-state="ready"][data-trace-id="${failedTrace}"]`);
  const failedNode = page.locator('[data-testid="run-node"][data-status="failed"]')
    .locator('[data-testid="run-error-message"]', { hasText: errorText }).first();
  await failedNode.waitFor({ state: "visible" });
  const nodes = await page.locator('[data-testid="run-node"]').count();
  if (nodes < 2) throw new Error(`execution tree has ${nodes} node(s)`);

  step = "screenshot";
  await page.screenshot({ path: screenshot, fullPage: false });

  step = "Esc closes the panel";
  await page.keyboard.press("Escape");
  await page.waitForSelector('[data-testid="trace-panel"]', { state: "hidden" });

  const relevant = consoleErrors.filter((e) => !/favicon/i.test(e));
  if (relevant.length) throw new Error(`console errors: ${relevant.join(" | ")}`);
  console.log(`viewer_check: ok (${all.length} traces, ${failed.length} failed, ${nodes} nodes; screenshot ${screenshot})`);
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(0);
} catch (e) {
  console.error(`viewer_check: FAILED at step "${step}": ${e && e.message ? e.message : e}`);
  if (consoleErrors.length) console.error("browser console errors: " + consoleErrors.join(" | "));
  if (context) {
    try {
      const p = context.pages()[0];
      if (p) await p.screenshot({ path: screenshot });
      console.error(`screenshot of the failure: ${screenshot}`);
    } catch (_) { /* ignore */ }
    await context.close().catch(() => {});
  }
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}
