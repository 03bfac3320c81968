"""KyroDB over HTTP: `kyrodb serve --data-dir DIR --port 0` on loopback, the /v2 collection API, one
keep-alive http.client connection per thread.

  PUT  /v2/collections/glove                 {"vectors":{"v":{"dim":50,"metric":"cosine"}},"fields":{"label":"integer"}}
  POST /v2/collections/glove/documents       {"documents":[{"id":"17","vector":[…],"fields":{"label":123}},…]}
  GET  /v2/collections/glove                 {"documents":N, … pending …}
  POST /v2/collections/glove/search          {"vector":[…],"limit":10,"ef":80[,"filter":{"must":[…]}]}

Measured: ingest docs/s (batches of BATCH, bodies encoded before the clock starts, one connection,
each batch answered 200 once durable and searchable); build time = ingest start until the collection
reports no pending index work; recall@10 and QPS per ef (one query at a time); filtered recall and QPS
at FILTER_EF through the planner; write->visible latency (a writer upserts one new document at a time,
a reader on its own connection polls search with that document's vector until its id comes back).
"""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import numpy as np

from dataset import K, label_threshold, log, recall

COLLECTION = "glove"
BATCH = 500
START_WAIT_S = 60


class Missing(Exception):
    """The server or its /v2 API is not there; the message says why."""


class HttpError(Exception):
    pass


class Conn:
    """One keep-alive HTTP/1.1 connection; reconnects once on a dropped connection."""

    def __init__(self, host, port, timeout=120):
        self.host, self.port, self.timeout = host, port, timeout
        self.c = None

    def request(self, method, path, body=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.c.connect()
                self.c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.c.request(method, path, body=body, headers=headers)
                r = self.c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, ConnectionError, OSError):
                self.c.close()
                self.c = None
                if attempt:
                    raise

    def json(self, method, path, body=None, ok=(200,)):
        status, data = self.request(method, path, body)
        if status not in ok:
            raise HttpError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data) if data else None

    def close(self):
        if self.c is not None:
            self.c.close()


def find_ints(obj, pred, found=None):
    """Every int value in a JSON tree whose key satisfies pred."""
    found = [] if found is None else found
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, int) and not isinstance(v, bool) and pred(k):
                found.append(v)
            else:
                find_ints(v, pred, found)
    elif isinstance(obj, list):
        for v in obj:
            find_ints(v, pred, found)
    return found


def doc_body(ids, vectors, labels):
    docs = [{"id": str(i), "vector": v, "fields": {"label": int(l)}}
            for i, v, l in zip(ids, vectors.tolist(), labels)]
    return json.dumps({"documents": docs}).encode()


def search_body(vector, ef, limit=K, filt=None):
    b = {"vector": vector.tolist(), "limit": limit, "ef": ef}
    if filt is not None:
        b["filter"] = filt
    return json.dumps(b).encode()


def label_filter(s):
    return {"must": [{"key": "label", "range": {"lt": label_threshold(s)}}]}


class Server:
    def __init__(self, binary):
        self.binary = binary
        self.work = tempfile.mkdtemp(prefix="kyrodb-bench-vectors.")
        self.log_path = os.path.join(self.work, "server.log")
        self.proc = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("KYRODB_")}
        env.update({"KYRODB_DISABLE_HTTP_LOG": "1", "RUST_LOG": env.get("RUST_LOG", "warn")})
        # For A/B runs of the indexer: BENCH_KYRODB_INDEX_THREADS=N sets the server's KYRODB_INDEX_THREADS.
        if os.environ.get("BENCH_KYRODB_INDEX_THREADS"):
            env["KYRODB_INDEX_THREADS"] = os.environ["BENCH_KYRODB_INDEX_THREADS"]
        logf = open(self.log_path, "w")
        # cwd = the temp dir, so no ./kyrodb.toml of the caller's is picked up.
        self.proc = subprocess.Popen([self.binary, "serve", "--data-dir", os.path.join(self.work, "data"),
                                      "--port", "0"], cwd=self.work, stdout=logf, stderr=logf, env=env)
        logf.close()
        deadline = time.monotonic() + START_WAIT_S
        pat = re.compile(r"listening on http://([0-9.]+|\[[0-9a-f:]+\]):(\d+)")
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                m = pat.search(f.read())
            if m:
                return m.group(1).strip("[]"), int(m.group(2))
            if self.proc.poll() is not None:
                raise Missing(f"kyrodb serve exited with {self.proc.returncode}: {self.tail()}")
            time.sleep(0.05)
        raise Missing(f"kyrodb serve printed no listening line in {START_WAIT_S}s: {self.tail()}")

    def tail(self):
        try:
            with open(self.log_path) as f:
                return " | ".join(f.read().strip().splitlines()[-5:])
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def wait_indexed(c, n, timeout_s):
    """Polls GET /v2/collections/glove until it holds n documents and no pending index work."""
    path = f"/v2/collections/{COLLECTION}"
    deadline = time.monotonic() + timeout_s
    warned = False
    while True:
        st = c.json("GET", path)
        docs = find_ints(st, lambda k: k == "documents")
        pending = find_ints(st, lambda k: "pending" in k.lower())
        if not pending and not warned:
            log(f"kyrodb_http: GET {path} shows no pending count; waiting on the document count only: {json.dumps(st)[:300]}")
            warned = True
        if (not docs or docs[0] >= n) and sum(pending) == 0:
            return st
        if time.monotonic() > deadline:
            raise HttpError(f"index not settled after {timeout_s}s: {json.dumps(st)[:300]}")
        time.sleep(0.05)


def timed_searches(c, bodies):
    path = f"/v2/collections/{COLLECTION}/search"
    for b in bodies[:20]:
        c.json("POST", path, b)
    out = []
    plan = None
    t = time.perf_counter()
    for b in bodies:
        r = c.json("POST", path, b)
        out.append([int(h["id"]) for h in r["hits"]][:K])
        if plan is None:
            plan = r.get("plan")
    return out, len(bodies) / (time.perf_counter() - t), plan


def visibility(host, port, vectors, first_id, count):
    """Write->visible: for each new document, the time from the start of its write until a reader
    polling search with its vector sees its id. Returns (visible ms list, write-ack ms list)."""
    writer = Conn(host, port)
    reader = Conn(host, port)
    docs_path = f"/v2/collections/{COLLECTION}/documents"
    search_path = f"/v2/collections/{COLLECTION}/search"
    visible_ms, ack_ms = [], []
    go = threading.Event()
    seen = threading.Event()
    state = {}
    stop = threading.Event()
    errors = []

    def read_loop():
        try:
            while not stop.is_set():
                if not go.wait(0.1):
                    continue
                go.clear()
                want, body, t0 = state["id"], state["search"], state["t0"]
                deadline = time.monotonic() + 30
                while True:
                    r = reader.json("POST", search_path, body)
                    if any(str(h["id"]) == want for h in r["hits"]):
                        state["visible"] = time.perf_counter() - t0
                        break
                    if time.monotonic() > deadline:
                        state["visible"] = None
                        break
                seen.set()
        except Exception as e:  # reported by the writer
            errors.append(e)
            seen.set()

    t = threading.Thread(target=read_loop, daemon=True)
    t.start()
    try:
        for i in range(count):
            doc_id = str(first_id + i)
            v = vectors[i % len(vectors)]
            body = json.dumps({"documents": [{"id": doc_id, "vector": v.tolist(), "fields": {"label": 0}}]}).encode()
            state.update({"id": doc_id, "search": search_body(v, 64, limit=K)})
            seen.clear()
            t0 = time.perf_counter()
            state["t0"] = t0
            go.set()
            writer.json("POST", docs_path, body)
            ack_ms.append((time.perf_counter() - t0) * 1e3)
            if not seen.wait(60):
                raise HttpError("reader did not answer within 60s")
            if errors:
                raise errors[0]
            if state["visible"] is None:
                raise HttpError(f"document {doc_id} not visible to search 30s after its write")
            visible_ms.append(state["visible"] * 1e3)
    finally:
        stop.set()
        t.join(5)
        writer.close()
        reader.close()
    return visible_ms, ack_ms


def run(binary, data, efs, filter_ef, visible_count, settle_timeout_s):
    """Returns the kyrodb_http results, or raises Missing when the server or its /v2 API is absent."""
    if not binary or not os.path.exists(binary):
        raise Missing(f"no kyrodb binary at {binary!r}")
    base, queries, labels = data["base_v"], data["queries_v"], data["labels_v"]
    n = base.shape[0]
    server = Server(binary)
    c = None
    try:
        host, port = server.start()
        log(f"kyrodb_http: server on {host}:{port}")
        c = Conn(host, port)
        spec = {"vectors": {"v": {"dim": int(base.shape[1]), "metric": "cosine"}},
                "fields": {"label": "integer"}}
        status, body = c.request("PUT", f"/v2/collections/{COLLECTION}", json.dumps(spec).encode())
        if status in (404, 405):
            raise Missing(f"PUT /v2/collections/{COLLECTION} answered {status}: the /v2 API is not in this build")
        if status not in (200, 201):
            raise HttpError(f"PUT /v2/collections/{COLLECTION}: {status} {body[:300]!r}")

        log(f"kyrodb_http: encoding {n} documents in batches of {BATCH}")
        bodies = [doc_body(range(lo, min(n, lo + BATCH)), base[lo:lo + BATCH], labels[lo:lo + BATCH])
                  for lo in range(0, n, BATCH)]
        log(f"kyrodb_http: ingesting ({len(bodies)} batches, one connection)")
        docs_path = f"/v2/collections/{COLLECTION}/documents"
        t0 = time.perf_counter()
        for b in bodies:
            c.json("POST", docs_path, b)
        ingest_s = time.perf_counter() - t0
        del bodies
        st = wait_indexed(c, n, settle_timeout_s)
        build_s = time.perf_counter() - t0
        log(f"kyrodb_http: ingest {n / ingest_s:.0f} docs/s ({ingest_s:.1f}s); settled after {build_s:.1f}s: {json.dumps(st)[:300]}")
        out = {"ingest_docs_per_s": n / ingest_s, "ingest_s": ingest_s, "build_s": build_s,
               "curve": [], "filtered": {}}

        for ef in efs:
            res, qps, _ = timed_searches(c, [search_body(q, ef) for q in queries])
            r = recall(res, data["truth_v"])
            out["curve"].append({"ef": ef, "recall": r, "qps": qps})
            log(f"kyrodb_http: ef={ef} recall={r:.4f} qps={qps:.0f}")
        for s_name, ftruth in data["filtered_truth_v"].items():
            filt = label_filter(float(s_name))
            res, qps, plan = timed_searches(c, [search_body(q, filter_ef, filt=filt) for q in queries])
            r = recall(res, ftruth)
            out["filtered"][s_name] = {"ef": filter_ef, "recall": r, "qps": qps, "plan": plan}
            log(f"kyrodb_http: filtered s={s_name} ef={filter_ef} recall={r:.4f} qps={qps:.0f} plan={json.dumps(plan)[:200]}")

        log(f"kyrodb_http: write->visible, {visible_count} single-document writes")
        vis, ack = visibility(host, port, queries, n, visible_count)
        out["visible_p50_ms"] = float(np.percentile(vis, 50))
        out["visible_p99_ms"] = float(np.percentile(vis, 99))
        # The part KyroDB adds after the acknowledgement (fsync is in the ack): the reader's first
        # search that starts after the ack sees the document, so this is about one search round trip.
        after = [max(0.0, v - a) for v, a in zip(vis, ack)]
        out["ack_to_visible_p99_ms"] = float(np.percentile(after, 99))
        out["write_ack_p50_ms"] = float(np.percentile(ack, 50))
        out["write_ack_p99_ms"] = float(np.percentile(ack, 99))
        log(f"kyrodb_http: visible p50 {out['visible_p50_ms']:.2f} ms p99 {out['visible_p99_ms']:.2f} ms; "
            f"write ack p50 {out['write_ack_p50_ms']:.2f} ms p99 {out['write_ack_p99_ms']:.2f} ms")
        return out
    finally:
        if c is not None:
            c.close()
        server.stop()
