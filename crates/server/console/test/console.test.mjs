// The console end to end in headless Chromium (Debian's, driven by playwright-core): every page
// loads, renders what the server holds, a hybrid query runs and its explain breakdown shows; with
// auth on, the page asks for a token and works once it has one, and a key scoped to one tenant of
// one collection sees only that. Screenshots of each page go to
// $SHOTS. Run by crates/cli/tests/console.rs, which starts the servers and fills them.
//
// env: KYRODB_URL (auth off, filled), KYRODB_AUTH_URL (auth on), KYRODB_TOKEN (its read token),
//      KYRODB_SCOPED_TOKEN (a read key for collection "shared", tenant "acme"),
//      CHROMIUM (binary), SHOTS (screenshot dir), NODE_PATH (playwright-core's node_modules).
import { createRequire } from "node:module";
import assert from "node:assert/strict";
import path from "node:path";

const require = createRequire(path.join(process.env.NODE_PATH, "x.js"));
const { chromium } = require("playwright-core");

const url = process.env.KYRODB_URL;
const shots = process.env.SHOTS;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const checks = [];
const ok = (what) => { checks.push(what); console.log(`ok - ${what}`); };

async function newPage() {
  const ctx = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await ctx.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  // API answers 4xx on purpose (an absent key, a bad filter, no token): the browser logs those.
  page.on("console", (m) => { if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) problems.push(`console: ${m.text()}`); });
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.protocol !== "data:" && u.hostname !== "127.0.0.1") problems.push(`off-site request: ${r.url()}`);
  });
  return { page, problems };
}
const ready = (page, name) => page.waitForFunction((n) => document.body.dataset.ready === n, name, { timeout: 20000 });

try {
  const { page, problems } = await newPage();

  // Overview: health, version, uptime, charts fed from /metrics, index table.
  await page.goto(`${url}/console`);
  await ready(page, "overview");
  await page.waitForSelector('[data-card="Status"].ok');
  assert.equal(await page.textContent('[data-card="Status"]'), "healthy");
  assert.match(await page.textContent('[data-card="Version"]'), /^\d+\.\d+\.\d+ \(/);
  assert.match(await page.textContent('[data-card="Uptime"]'), /\d+m \d+s/);
  assert.equal(await page.textContent('[data-card="Keys"]') !== "–", true);
  // Two scrapes apart the rate chart has a point and a number.
  await page.waitForFunction(() => /req\/s \d/.test(document.querySelector('[data-chart="Request rate"]')?.textContent || ""), null, { timeout: 15000 });
  // A few scrapes later the chart draws a line (the screenshot shows it).
  await page.waitForFunction(() => (document.querySelector('[data-chart="Request rate"] polyline')
    ?.getAttribute("points") || "").split(" ").length >= 3, null, { timeout: 20000 });
  assert.ok(await page.$('[data-chart="Request latency"] svg'));
  await page.waitForSelector('[data-table="indexes"] a');
  assert.match(await page.textContent('[data-table="indexes"]'), /news/);
  await page.screenshot({ path: path.join(shots, "overview.png"), fullPage: true });
  ok("overview: healthy, version, uptime, request-rate and latency charts, index table");

  // Key-value lookup: text and binary values, absent keys.
  await page.goto(`${url}/console#/kv`);
  await ready(page, "kv");
  await page.fill("#kv-key", "7");
  await page.click('#kv-form button[type="submit"]');
  await page.waitForSelector('[data-value="1"]');
  assert.equal(await page.textContent('[data-value="1"]'), "hello from the console test");
  await page.fill("#kv-key", "8");
  await page.click('#kv-form button[type="submit"]');
  await page.waitForFunction(() => document.querySelector('[data-value="1"]')?.textContent === "00 ff 10");
  await page.fill("#kv-key", "999");
  await page.click('#kv-form button[type="submit"]');
  await page.waitForSelector('[data-value="absent"]');
  await page.fill("#kv-key", "7");
  await page.click('#kv-form button[type="submit"]');
  await page.waitForSelector('[data-value="1"]');
  await page.screenshot({ path: path.join(shots, "kv.png"), fullPage: true });
  ok("key-value: UTF-8 value, binary value as hex, absent key");

  // Collections browser: list, then one collection's schema, indexes and documents (paged).
  await page.goto(`${url}/console#/collections`);
  await ready(page, "collections");
  await page.waitForSelector('[data-table="collections"]');
  assert.match(await page.textContent('[data-table="collections"]'), /news/);
  await page.screenshot({ path: path.join(shots, "collections.png"), fullPage: true });
  await page.click('[data-table="collections"] a');
  await page.waitForSelector('[data-table="documents"] tr:nth-child(21)');
  assert.match(await page.textContent('[data-card="Documents"]'), /^\d[\d,]*$/);
  assert.match(await page.textContent('[data-table="vector-indexes"]'), /text\s*384\s*cosine/);
  assert.match(await page.textContent('[data-json="schema"]'), /"timestamp_field": "published"/);
  const firstPage = await page.textContent('[data-table="documents"]');
  await page.click('[data-next="1"]');
  await page.waitForFunction((before) => document.querySelector('[data-table="documents"]')?.textContent !== before, firstPage);
  await page.screenshot({ path: path.join(shots, "collection.png"), fullPage: true });
  ok("collections: list, schema, vector index state, documents paged");

  // Search playground: a hybrid query (server-side embedding + BM25 + filter), explain shown.
  await page.goto(`${url}/console#/search`);
  await ready(page, "search");
  await page.selectOption("#s-collection", "news");
  await page.fill("#s-query", "rust database engine");
  await page.fill("#s-filter", '{"lang": "en"}');
  await page.click("#s-run");
  await page.waitForSelector('[data-table="hits"] tr[data-hit]');
  const hits = await page.$$eval('[data-table="hits"] tr[data-hit]', (rows) => rows.map((r) => r.dataset.hit));
  assert.ok(hits.length >= 3, `hits: ${hits}`);
  const table = await page.textContent('[data-table="hits"]');
  assert.match(table, /vector:text/);
  assert.match(table, /#1 · /);
  assert.match(table, /\btext\b/);
  const bars = await page.$$eval('[data-table="hits"] .bar', (b) => b.map((x) => x.getBoundingClientRect().width));
  assert.ok(bars.length >= hits.length && bars.some((w) => w > 40), `bars ${bars}`);
  for (const s of ["vector:text", "text", "fusion"]) assert.ok(await page.$(`[data-stage="${s}"]`), `stage ${s}`);
  assert.match(await page.textContent('[data-stage="fusion"]'), /rrf/);
  assert.match(await page.textContent('[data-summary="1"]'), /server \d[\d,]* µs/);
  await page.screenshot({ path: path.join(shots, "search.png"), fullPage: true });
  ok("search: hybrid query with per-component ranks and scores, plan stages with time");

  // A bad filter is the server's 400, shown, not a blank page.
  await page.fill("#s-filter", '{"no_such_field": 1}');
  await page.click("#s-run");
  await page.waitForSelector('[role="alert"]');
  assert.match(await page.textContent('[role="alert"]'), /400 .*no_such_field/);
  ok("search: a bad filter shows the server's error");
  assert.deepEqual(problems, [], "no script errors, failed or off-site requests");

  // Auth on: the page says it needs a token, then works with one.
  if (process.env.KYRODB_AUTH_URL) {
    const { page: p2, problems: pr2 } = await newPage();
    await p2.goto(`${process.env.KYRODB_AUTH_URL}/console#/collections`);
    await p2.waitForSelector("#banner:not([hidden])");
    assert.match(await p2.textContent("#banner"), /token/);
    assert.match(await p2.textContent("#auth-state"), /token needed/);
    await p2.screenshot({ path: path.join(shots, "token.png") });
    await p2.fill("#token", process.env.KYRODB_TOKEN);
    await p2.click('#token-form button[type="submit"]');
    await p2.waitForSelector('[data-table="collections"], main p.muted');
    await p2.waitForFunction(() => document.querySelector("#auth-state")?.textContent === "token accepted");
    assert.equal(await p2.isHidden("#banner"), true);
    assert.deepEqual(pr2.filter((p) => !/401/.test(p)), []);
    ok("auth: asks for a token, works with one");
  }

  // A key scoped to one collection and bound to tenant "acme": the console shows only what it
  // reaches, and the server's 403 for the rest.
  if (process.env.KYRODB_SCOPED_TOKEN) {
    const { page: p3, problems: pr3 } = await newPage();
    await p3.goto(`${process.env.KYRODB_AUTH_URL}/console#/collections`);
    await p3.fill("#token", process.env.KYRODB_SCOPED_TOKEN);
    await p3.click('#token-form button[type="submit"]');
    await p3.waitForFunction(() => document.querySelector("#auth-state")?.textContent === "token accepted");
    await p3.waitForSelector('[data-table="collections"]');
    const listed = await p3.$$eval('[data-table="collections"] td a', (as) => as.map((a) => a.textContent));
    assert.deepEqual(listed, ["shared"]);
    await p3.goto(`${process.env.KYRODB_AUTH_URL}/console#/collections/shared`);
    await p3.waitForSelector('[data-table="documents"]');
    const ids = await p3.$$eval('[data-table="documents"] tr td:first-child', (tds) => tds.map((t) => t.textContent));
    assert.deepEqual(ids.sort(), ["acme-1", "acme-2"]);
    assert.doesNotMatch(await p3.textContent("main"), /globex/);
    await p3.screenshot({ path: path.join(shots, "scoped.png"), fullPage: true });
    await p3.goto(`${process.env.KYRODB_AUTH_URL}/console#/collections/private`);
    await p3.waitForSelector('[role="alert"]');
    assert.match(await p3.textContent('[role="alert"]'), /^403 forbidden: /);
    assert.deepEqual(pr3, []);
    ok("scoped key: sees its collection and its tenant's documents only");
  }
  console.log(`${checks.length} checks passed`);
} finally {
  await browser.close();
}
