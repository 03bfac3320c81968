// KyroDB web console: plain JavaScript, no dependencies, served by the server itself.
// Pages (hash routes): #/ overview, #/kv, #/collections, #/collections/<name>, #/search.
"use strict";

const state = { token: localStorage.getItem("kyrodb.token") || "", timers: [], build: null };

// ---- DOM helper: h("div", {class: "x", onclick: f, style: {width: "3px"}}, child, ...) --------
function h(tag, attrs, ...kids) {
  const svg = ["svg", "polyline", "line", "text", "rect", "g"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "style") Object.assign(el.style, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (svg || k.startsWith("data-") || k === "for" || k === "role") el.setAttribute(k, v);
    else el[k] = v;
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const $ = (sel) => document.querySelector(sel);
const fmt = (n, d = 0) => (n === null || n === undefined || Number.isNaN(n)) ? "–" :
  Number(n).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${fmt(n, i ? 1 : 0)} ${u[i]}`;
}
function duration(s) {
  s = Math.floor(s); const d = Math.floor(s / 86400), hh = Math.floor(s % 86400 / 3600),
    m = Math.floor(s % 3600 / 60), sec = s % 60;
  return (d ? `${d}d ` : "") + (d || hh ? `${hh}h ` : "") + `${m}m ${sec}s`;
}

// ---- API -----------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, code, message) { super(`${status} ${code}: ${message}`); Object.assign(this, { status, code }); }
}
async function api(method, path, body, raw) {
  const headers = {};
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!r.ok) {
    let code = "error", message = r.statusText;
    try { const j = await r.json(); code = j.error.code; message = j.error.message; } catch (_) { /* not JSON */ }
    if (r.status === 401) showBanner("This server has auth on: type a token (read role or higher) above and press Use.");
    throw new ApiError(r.status, code, message);
  }
  if (raw) return r;
  const t = r.headers.get("content-type") || "";
  return t.includes("json") ? r.json() : r.text();
}
function showBanner(text) { const b = $("#banner"); b.textContent = text; b.hidden = !text; }
function errorBox(e) { return h("p", { class: "error", role: "alert" }, String(e.message || e)); }

// ---- Prometheus text -> {name: [{labels, value}]} ------------------------------------------------
function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const p of m[3].matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    (out[m[1]] = out[m[1]] || []).push({ labels, value: Number(m[4]) });
  }
  return out;
}
const sum = (xs, pred = () => true) => (xs || []).filter((x) => pred(x.labels)).reduce((a, x) => a + x.value, 0);
function bucketsOf(metrics, name, pred) {
  const by = new Map();
  for (const x of metrics[name + "_bucket"] || []) {
    if (!pred(x.labels)) continue;
    const le = x.labels.le === "+Inf" ? Infinity : Number(x.labels.le);
    by.set(le, (by.get(le) || 0) + x.value);
  }
  return [...by.entries()].sort((a, b) => a[0] - b[0]);
}
function quantile(buckets, q) { // buckets: [[le, cumulative count]], as deltas between scrapes
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return null;
  const rank = q * total; let prevLe = 0, prevC = 0;
  for (const [le, c] of buckets) {
    if (c >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + (le - prevLe) * ((rank - prevC) / Math.max(c - prevC, 1e-9));
    }
    prevLe = le; prevC = c;
  }
  return prevLe;
}

// ---- a small SVG line chart ----------------------------------------------------------------
function lineChart(title, series, unit) {
  const W = 400, H = 140, P = 28;
  const all = series.flatMap((s) => s.points.filter((p) => p !== null));
  const max = Math.max(1e-9, ...all) * 1.15;
  const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  for (let i = 0; i <= 2; i++) {
    const y = P / 2 + (H - P) * i / 2;
    svg.append(h("line", { x1: P, x2: W, y1: y, y2: y, stroke: "#e3e6ec" }));
    svg.append(h("text", { x: 2, y: y + 4, "font-size": 10, fill: "#6b7385" }, fmt(max * (1 - i / 2), max < 10 ? 2 : 0)));
  }
  for (const s of series) {
    const n = s.points.length;
    const pts = s.points.map((v, i) => v === null ? null :
      `${P + (W - P) * (n > 1 ? i / (n - 1) : 1)},${P / 2 + (H - P) * (1 - v / max)}`).filter(Boolean);
    if (pts.length) svg.append(h("polyline", { points: pts.join(" "), fill: "none", stroke: s.color, "stroke-width": 2 }));
  }
  const last = (s) => { const v = s.points.filter((p) => p !== null).pop(); return v === undefined ? "–" : fmt(v, 2); };
  return h("div", { class: "chart", "data-chart": title },
    h("div", null, h("strong", null, title), " ", h("span", { class: "muted" }, unit)),
    svg,
    h("div", { class: "legend" }, series.map((s) => h("span", { style: { color: s.color } }, `● ${s.name} ${last(s)}`))));
}

// ---- pages ---------------------------------------------------------------------------------
const card = (label, value, cls) => h("div", { class: "card" }, h("div", { class: "label" }, label),
  h("div", { class: "value " + (cls || ""), "data-card": label }, value));

async function overview(main) {
  main.replaceChildren(h("h1", null, "Overview"), h("p", { class: "muted" }, "Loading…"));
  const hist = { t: [], rate: [], p50: [], p99: [], prev: null };
  const cards = h("div", { class: "cards" });
  const charts = h("div", { class: "charts" });
  const tables = h("div");
  main.replaceChildren(h("h1", null, "Overview"), cards, charts, tables);
  async function tick() {
    let health = "down", info = null, m = {};
    try { health = (await api("GET", "/health")).status; } catch (e) { health = "down"; }
    try { info = await api("GET", "/build_info"); state.build = info; } catch (e) { cards.replaceChildren(errorBox(e)); return; }
    try { m = parseMetrics(await api("GET", "/metrics")); } catch (e) { m = {}; }
    const now = Date.now() / 1000;
    const notScrape = (l) => l.route !== "/metrics";
    const total = sum(m.kyrodb_http_requests_total, notScrape);
    const buckets = bucketsOf(m, "kyrodb_http_request_duration_seconds", notScrape);
    if (hist.prev) {
      const dt = Math.max(now - hist.prev.t, 1e-3);
      const delta = buckets.map(([le, c], i) => [le, c - (hist.prev.buckets[i] ? hist.prev.buckets[i][1] : 0)]);
      hist.rate.push((total - hist.prev.total) / dt);
      const p50 = quantile(delta, 0.5), p99 = quantile(delta, 0.99);
      hist.p50.push(p50 === null ? null : p50 * 1000);
      hist.p99.push(p99 === null ? null : p99 * 1000);
      for (const k of ["rate", "p50", "p99"]) if (hist[k].length > 60) hist[k].shift();
    }
    hist.prev = { t: now, total, buckets };
    const g = (name) => sum(m[name]);
    cards.replaceChildren(
      card("Status", health === "ok" ? "healthy" : health, health === "ok" ? "ok" : "bad"),
      card("Version", `${info.version} (${info.git_sha.slice(0, 10)})`),
      card("Uptime", duration(info.uptime_seconds)),
      card("Embeddings", info.auto_embed, info.auto_embed === "available" ? "ok" : ""),
      card("Keys", fmt(g("kyrodb_storage_keys"))),
      card("Last sequence", fmt(g("kyrodb_storage_last_seq"))),
      card("WAL segments", fmt(g("kyrodb_storage_wal_segments"))),
      card("Snapshot data", bytes(g("kyrodb_storage_snapshot_data_bytes"))),
      card("Disk free", m.kyrodb_disk_free_bytes ? `${bytes(g("kyrodb_disk_free_bytes"))} of ${bytes(g("kyrodb_disk_total_bytes"))}` : "–"),
      card("Learned index", `${fmt(g("kyrodb_index_leaves"))} leaves, ε ${fmt(g("kyrodb_index_epsilon_bound_slots"))}`),
      card("Documents", fmt(g("kyrodb_search_documents"))),
      card("Vectors pending", fmt(g("kyrodb_search_pending_vectors"))),
    );
    charts.replaceChildren(
      lineChart("Request rate", [{ name: "req/s", color: "#2f6fed", points: hist.rate }], "requests per second (all routes but /metrics)"),
      lineChart("Request latency", [{ name: "p50", color: "#1f9d55", points: hist.p50 },
        { name: "p99", color: "#d64545", points: hist.p99 }], "ms, from the server's histogram"),
    );
    const coll = {};
    for (const x of m.kyrodb_search_documents || []) coll[x.labels.collection] = { docs: x.value, fields: [] };
    for (const x of m.kyrodb_search_vectors || []) {
      const c = coll[x.labels.collection] || (coll[x.labels.collection] = { docs: 0, fields: [] });
      const pend = (m.kyrodb_search_pending_vectors || []).find((p) => p.labels.collection === x.labels.collection && p.labels.field === x.labels.field);
      const by = (m.kyrodb_search_index_bytes || []).find((p) => p.labels.collection === x.labels.collection && p.labels.field === x.labels.field);
      c.fields.push({ field: x.labels.field, vectors: x.value, pending: pend ? pend.value : 0, bytes: by ? by.value : 0 });
    }
    tables.replaceChildren(h("h2", null, "Indexes"), Object.keys(coll).length ? h("table", { "data-table": "indexes" },
      h("tr", null, h("th", null, "collection"), h("th", { class: "num" }, "documents"), h("th", null, "vector field"),
        h("th", { class: "num" }, "vectors"), h("th", { class: "num" }, "pending"), h("th", { class: "num" }, "index bytes")),
      Object.entries(coll).flatMap(([name, c]) => (c.fields.length ? c.fields : [{}]).map((f) => h("tr", null,
        h("td", null, h("a", { href: `#/collections/${encodeURIComponent(name)}` }, name)), h("td", { class: "num" }, fmt(c.docs)),
        h("td", null, f.field || "–"), h("td", { class: "num" }, fmt(f.vectors)), h("td", { class: "num" }, fmt(f.pending)),
        h("td", { class: "num" }, f.bytes === undefined ? "–" : bytes(f.bytes))))))
      : h("p", { class: "muted" }, "No collections yet."));
  }
  await tick();
  state.timers.push(setInterval(tick, 2000));
}

async function kv(main) {
  let keyspaces = [{ name: "default", keys: null }];
  try { keyspaces = (await api("GET", "/v1/keyspaces")).keyspaces; } catch (e) { main.replaceChildren(h("h1", null, "Key-value"), errorBox(e)); return; }
  const out = h("div");
  const ks = h("select", { id: "kv-keyspace" }, keyspaces.map((k) => h("option", { value: k.name }, `${k.name} (${fmt(k.keys)} keys)`)));
  const key = h("input", { id: "kv-key", type: "number", min: 0, placeholder: "key (u64)", required: true });
  const start = h("input", { id: "kv-start", type: "number", min: 0, value: 0 });
  async function lookup(ev) {
    ev.preventDefault();
    out.replaceChildren(h("p", { class: "muted" }, "…"));
    try {
      const q = ks.value === "default" ? "" : `?keyspace=${encodeURIComponent(ks.value)}`;
      const r = await api("GET", `/v1/kv/${encodeURIComponent(key.value)}${q}`, undefined, true);
      const buf = new Uint8Array(await r.arrayBuffer());
      let text = null;
      try { text = new TextDecoder("utf-8", { fatal: true }).decode(buf); } catch (_) { text = null; }
      out.replaceChildren(h("table", { "data-table": "kv-value" },
        h("tr", null, h("th", null, "key"), h("td", null, key.value)),
        h("tr", null, h("th", null, "written at seq"), h("td", null, r.headers.get("x-kyrodb-seq") || "–")),
        h("tr", null, h("th", null, "bytes"), h("td", null, fmt(buf.length))),
        h("tr", null, h("th", null, text === null ? "value (hex: not UTF-8)" : "value (UTF-8)"),
          h("td", { class: "kv-value", "data-value": "1" }, text === null ? [...buf].map((b) => b.toString(16).padStart(2, "0")).join(" ") : text))));
    } catch (e) {
      out.replaceChildren(e.status === 404 ? h("p", { "data-value": "absent" }, `Key ${key.value} has no value.`) : errorBox(e));
    }
  }
  async function scan(ev) {
    ev.preventDefault();
    try {
      const q = new URLSearchParams({ start: start.value || 0, limit: 20 });
      if (ks.value !== "default") q.set("keyspace", ks.value);
      const j = await api("GET", `/v1/scan?${q}`);
      out.replaceChildren(h("table", { "data-table": "kv-scan" }, h("tr", null, h("th", null, "key"), h("th", null, "value")),
        j.items.map((it) => h("tr", null, h("td", null, it.key), h("td", { class: "kv-value" }, it.value ?? `hex ${it.value_hex}`)))),
      j.next_start !== null && j.next_start !== undefined ? h("p", { class: "muted" }, `more from key ${j.next_start}`) : null);
    } catch (e) { out.replaceChildren(errorBox(e)); }
  }
  main.replaceChildren(h("h1", null, "Key-value"),
    h("form", { class: "grid", onsubmit: lookup, id: "kv-form" },
      h("label", null, "Keyspace", ks), h("label", null, "Key", key), h("button", { type: "submit" }, "Look up")),
    h("form", { class: "grid", onsubmit: scan, id: "kv-scan-form", style: { marginTop: "10px" } },
      h("label", null, "Scan from key", start), h("button", { type: "submit", class: "secondary" }, "Scan 20")),
    h("div", { style: { marginTop: "14px" } }, out));
}

async function collections(main) {
  let list;
  try { list = (await api("GET", "/v2/collections")).collections; } catch (e) { main.replaceChildren(h("h1", null, "Collections"), errorBox(e)); return; }
  main.replaceChildren(h("h1", null, "Collections"), list.length ? h("table", { "data-table": "collections" },
    h("tr", null, h("th", null, "name"), h("th", { class: "num" }, "documents"), h("th", null, "vector fields"), h("th", null, "text fields"), h("th", null, "created")),
    list.map((c) => h("tr", null, h("td", null, h("a", { href: `#/collections/${encodeURIComponent(c.name)}` }, c.name)),
      h("td", { class: "num" }, fmt(c.documents)),
      h("td", null, Object.entries(c.schema.vectors || {}).map(([n, v]) => `${n} (${v.dim}, ${v.metric}${v.embed ? ", " + v.embed.model : ""})`).join(", ") || "–"),
      h("td", null, (c.schema.text_fields || []).join(", ") || "–"), h("td", null, c.created_at || "–"))))
    : h("p", { class: "muted" }, "No collections yet. Create one with PUT /v2/collections/{name} or `kyrodb collection create`."));
}

async function collection(main, name) {
  let info;
  try { info = await api("GET", `/v2/collections/${encodeURIComponent(name)}`); } catch (e) { main.replaceChildren(h("h1", null, name), errorBox(e)); return; }
  const docs = h("div");
  const cursors = [null];
  async function page(i) {
    const after = cursors[i];
    const q = new URLSearchParams({ limit: 20 }); if (after) q.set("after", after);
    try {
      const j = await api("GET", `/v2/collections/${encodeURIComponent(name)}/documents?${q}`);
      if (j.next) cursors[i + 1] = j.next;
      docs.replaceChildren(h("table", { "data-table": "documents" },
        h("tr", null, h("th", null, "id"), h("th", null, "text"), h("th", null, "fields")),
        j.documents.map((d) => h("tr", null, h("td", null, d.id),
          h("td", null, Object.entries(d.text || {}).map(([k, v]) => `${k}: ${String(v).slice(0, 140)}`).join(" · ")),
          h("td", null, h("code", null, JSON.stringify(d.fields || {}).slice(0, 200)))))),
      h("div", { class: "row" },
        h("button", { class: "secondary", disabled: i === 0, onclick: () => page(i - 1) }, "Previous"),
        h("span", { class: "muted" }, `page ${i + 1}`),
        h("button", { class: "secondary", disabled: !j.next, onclick: () => page(i + 1), "data-next": "1" }, "Next")));
    } catch (e) { docs.replaceChildren(errorBox(e)); }
  }
  const ix = Object.entries(info.indexes || {});
  main.replaceChildren(h("h1", null, `Collection ${name}`),
    h("div", { class: "cards" },
      card("Documents", fmt(info.documents)),
      card("Created", info.created_at || "–"),
      card("Graphs from", info.graph_source || "–"),
      card("Full text from", info.text_source || "–"),
      card("Ranking", (info.learned_ranking || {}).serving || "rrf")),
    h("h2", null, "Vector indexes"), ix.length ? h("table", { "data-table": "vector-indexes" },
      h("tr", null, h("th", null, "field"), h("th", { class: "num" }, "dim"), h("th", null, "metric"), h("th", { class: "num" }, "vectors"),
        h("th", { class: "num" }, "pending"), h("th", null, "state"), h("th", { class: "num" }, "bytes")),
      ix.map(([f, v]) => h("tr", null, h("td", null, f), h("td", { class: "num" }, v.dim), h("td", null, v.metric), h("td", { class: "num" }, fmt(v.vectors)),
        h("td", { class: "num" }, fmt(v.pending)), h("td", null, v.state), h("td", { class: "num" }, bytes(v.bytes)))))
      : h("p", { class: "muted" }, "No vector fields."),
    h("h2", null, "Full-text index"), h("pre", { "data-json": "text-index" }, JSON.stringify(info.text_index || {}, null, 2)),
    h("h2", null, "Schema"), h("pre", { "data-json": "schema" }, JSON.stringify(info.schema, null, 2)),
    h("h2", null, "Learned ranking"), h("pre", null, JSON.stringify(info.learned_ranking || {}, null, 2)),
    h("h2", null, "Documents"), docs);
  await page(0);
}

async function search(main) {
  let list = [];
  try { list = (await api("GET", "/v2/collections")).collections; } catch (e) { main.replaceChildren(h("h1", null, "Search"), errorBox(e)); return; }
  if (!state.build) { try { state.build = await api("GET", "/build_info"); } catch (_) { /* shown elsewhere */ } }
  const embed = state.build && state.build.auto_embed === "available";
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const coll = h("select", { id: "s-collection" }, list.map((c) => h("option", { value: c.name, selected: c.name === params.get("collection") }, c.name)));
  const using = h("select", { id: "s-using" });
  const q = h("input", { id: "s-query", placeholder: "words to match (BM25) — and, with the model, to embed", value: params.get("q") || "" });
  const vecText = h("input", { id: "s-vector-text", type: "checkbox", checked: embed, disabled: !embed });
  const vec = h("textarea", { id: "s-vector", rows: 2, placeholder: "or a query vector as JSON: [0.1, 0.2, …]" });
  const filter = h("textarea", { id: "s-filter", rows: 2, placeholder: '{"lang": "en"} or {"must": [{"key": "rank", "range": {"lte": 100}}]}' });
  const last = h("select", { id: "s-last" }, ["", "24h", "7d", "30d", "365d"].map((v) => h("option", { value: v }, v || "any time")));
  const fusion = h("select", { id: "s-fusion" }, ["rrf", "weighted", "dbsf", "learned_ranking"].map((v) => h("option", { value: v }, v)));
  const limit = h("input", { id: "s-limit", type: "number", min: 1, max: 1000, value: 10 });
  const out = h("div", { id: "s-results" });
  function fields() {
    const c = list.find((x) => x.name === coll.value);
    using.replaceChildren(...Object.keys((c && c.schema.vectors) || {}).map((n) => h("option", { value: n }, n)));
  }
  coll.addEventListener("change", fields); fields();
  async function run(ev) {
    if (ev) ev.preventDefault();
    const body = { collection: coll.value, fusion_strategy: fusion.value, limit: Number(limit.value) || 10, explain: true, with: ["fields", "text"] };
    try {
      const v = vec.value.trim();
      if (v) body.vector_similarity = { embedding: JSON.parse(v), using: using.value || undefined };
      else if (q.value.trim() && vecText.checked && using.value) body.vector_similarity = { text: q.value, using: using.value };
      if (q.value.trim()) body.text_search = q.value;
      if (filter.value.trim()) body.metadata_filters = JSON.parse(filter.value);
      if (last.value) body.temporal_range = { last: last.value };
    } catch (e) { out.replaceChildren(errorBox(new Error(`not JSON: ${e.message}`))); return; }
    out.replaceChildren(h("p", { class: "muted" }, "Searching…"));
    const t0 = performance.now();
    let r;
    try { r = await api("POST", "/v2/search/hybrid", body); } catch (e) { out.replaceChildren(errorBox(e)); return; }
    const rtt = performance.now() - t0;
    out.replaceChildren(...renderResults(r, rtt), h("h2", null, "Request"), h("pre", { "data-json": "request" }, JSON.stringify(body, null, 2)));
  }
  main.replaceChildren(h("h1", null, "Search playground"),
    h("form", { class: "grid", onsubmit: run, id: "search-form" },
      h("label", null, "Collection", coll), h("label", null, "Vector field", using),
      h("label", null, "Fusion", fusion), h("label", null, "Time range (timestamp field)", last),
      h("label", { class: "wide" }, "Query", q),
      h("label", null, h("span", null, vecText, " embed the query on the server", embed ? "" : " (no model)")),
      h("label", null, "Limit", limit),
      h("label", { class: "wide" }, "Query vector (optional)", vec),
      h("label", { class: "wide" }, "Metadata filter (optional)", filter),
      h("button", { type: "submit", id: "s-run" }, "Search")),
    h("div", { style: { marginTop: "14px" } }, out));
  if (params.get("q") && list.length) run();
}

function renderResults(r, rtt) {
  const hits = r.hits || [];
  const comps = [...new Set(hits.flatMap((x) => Object.keys(x.components || {})))];
  const maxScore = {};
  for (const c of comps) maxScore[c] = Math.max(1e-9, ...hits.map((x) => Math.abs(((x.components || {})[c] || {}).score || 0)));
  const cls = (c) => c.startsWith("vector") ? "vec" : c === "text" ? "text" : "other";
  const table = h("table", { "data-table": "hits" },
    h("tr", null, h("th", { class: "num" }, "#"), h("th", null, "id"), h("th", { class: "num" }, "fused score"),
      h("th", null, "components (rank · score)"), h("th", null, "document")),
    hits.map((x, i) => h("tr", { "data-hit": x.id }, h("td", { class: "num" }, i + 1), h("td", null, x.id), h("td", { class: "num" }, fmt(x.score, 4)),
      h("td", null, comps.map((c) => {
        const v = (x.components || {})[c];
        return h("div", { class: "comp" }, h("span", { class: "name" }, c),
          v ? [h("span", { class: `bar ${cls(c)}`, style: { width: `${Math.round(80 * Math.abs(v.score) / maxScore[c])}px` } }),
            `#${v.rank} · ${fmt(v.score, 3)}`] : h("span", { class: "muted" }, "not listed"));
      })),
      h("td", null, Object.values(x.text || {}).join(" · ").slice(0, 160) || h("code", null, JSON.stringify(x.fields || {}).slice(0, 160))))));
  const plan = r.plan || {};
  const stages = plan.stages || [];
  const maxUs = Math.max(1, ...stages.map((s) => s.took_us || 0));
  const planBox = h("div", { "data-plan": "1" }, stages.map((s) => {
    const name = s.component || s.stage || "stage";
    const detail = s.kind === "vector" ? `${(s.plan || {}).strategy || ""} ef ${(s.plan || {}).ef ?? "–"}, ${s.listed} listed`
      : s.kind === "bm25" ? `${s.strategy}, ${fmt(s.postings)} postings, ${fmt(s.scored)} scored, ${s.listed} listed`
        : s.stage === "fusion" ? `${s.strategy}${s.k ? " k=" + s.k : ""}${s.fallback ? " (fallback: " + s.fallback + ")" : ""}, ${s.fused} fused` : "";
    return h("div", { class: "stage", "data-stage": name }, h("span", null, name, h("br"), h("span", { class: "muted" }, detail)),
      h("div", { class: "track" }, h("div", { class: "fill", style: { width: `${Math.max(1, 100 * (s.took_us || 0) / maxUs)}%` } })),
      h("span", { class: "num" }, `${fmt(s.took_us)} µs`));
  }));
  return [h("p", { class: "muted", "data-summary": "1" }, `${hits.length} hits · server ${fmt(plan.took_us)} µs · round trip ${fmt(rtt, 1)} ms`
      + (plan.time_range ? ` · time range ${JSON.stringify(plan.time_range)}` : "")),
    hits.length ? table : h("p", null, "No hits."), h("h2", null, "Plan (time per stage)"), planBox];
}

// ---- router ----------------------------------------------------------------------------------
async function route() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  showBanner("");
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const page = parts[0] || "overview";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  const main = $("#main");
  document.body.dataset.page = page;
  try {
    if (page === "overview") await overview(main);
    else if (page === "kv") await kv(main);
    else if (page === "collections" && parts[1]) await collection(main, parts[1]);
    else if (page === "collections") await collections(main);
    else if (page === "search") await search(main);
    else main.replaceChildren(h("p", null, "No such page."));
  } catch (e) { main.replaceChildren(errorBox(e)); }
  document.body.dataset.ready = page;
}

async function authState() {
  const el = $("#auth-state");
  try { await api("GET", "/v1/keyspaces"); el.textContent = state.token ? "token accepted" : "auth off"; el.className = "ok"; }
  catch (e) { el.textContent = e.status === 401 ? "token needed" : e.status === 403 ? "token lacks the read role" : ""; el.className = "bad"; }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#token").value = state.token;
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("#token").value.trim();
    localStorage.setItem("kyrodb.token", state.token);
    authState(); route();
  });
  window.addEventListener("hashchange", route);
  authState(); route();
});
