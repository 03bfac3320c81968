"""A stand-in for `kyrodb serve` that speaks the pinned /v2 collection API with exact (brute-force)
search, for testing the suite's HTTP client without the real server:

  python mock_kyrodb.py serve --data-dir DIR --port 0 [--no-v2] [--index-delay-s S]

It prints "kyrodb listening on http://127.0.0.1:PORT" on stderr like the real one. --no-v2 answers 404 to
every /v2 route (a build without the API). --index-delay-s makes documents count as pending (and
invisible to search) for S seconds after their write, so the suite's wait-for-pending loop and the
write->visible reader have something to wait for. Not a benchmark of anything.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


class Store:
    def __init__(self, delay):
        self.lock = threading.Lock()
        self.delay = delay
        self.dim = None
        self.ids, self.vecs, self.labels, self.times = [], [], [], []
        self.index = {}

    def upsert(self, docs):
        now = time.monotonic()
        with self.lock:
            for d in docs:
                v = np.asarray(d["vector"], dtype=np.float32)
                v = v / max(float(np.linalg.norm(v)), 1e-30)
                label = int(d.get("fields", {}).get("label", 0))
                if d["id"] in self.index:
                    i = self.index[d["id"]]
                    self.vecs[i], self.labels[i], self.times[i] = v, label, now
                else:
                    self.index[d["id"]] = len(self.ids)
                    self.ids.append(d["id"])
                    self.vecs.append(v)
                    self.labels.append(label)
                    self.times.append(now)
            self.mat = None

    def pending(self):
        now = time.monotonic()
        with self.lock:
            return sum(1 for t in self.times if now - t < self.delay)

    def search(self, q, limit, lt):
        now = time.monotonic()
        with self.lock:
            if getattr(self, "mat", None) is None:
                self.mat = np.array(self.vecs, dtype=np.float32).reshape(len(self.vecs), -1)
                self.lab = np.array(self.labels)
                self.tim = np.array(self.times)
            mat, lab, tim = self.mat, self.lab, self.tim
        if len(mat) == 0:
            return []
        q = np.asarray(q, dtype=np.float32)
        q = q / max(float(np.linalg.norm(q)), 1e-30)
        scores = mat @ q
        ok = (now - tim) >= self.delay
        if lt is not None:
            ok &= lab < lt
        scores = np.where(ok, scores, -np.inf)
        top = np.argsort(-scores, kind="stable")[:limit]
        return [{"id": self.ids[i], "score": float(scores[i])} for i in top if np.isfinite(scores[i])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--data-dir")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--no-v2", action="store_true")
    ap.add_argument("--index-delay-s", type=float, default=0.0)
    a = ap.parse_args()
    store = Store(a.index_delay_s)
    collections = {}

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def log_message(self, *args):
            pass

        def send(self, status, obj):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def body(self):
            n = int(self.headers.get("Content-Length", 0))
            return json.loads(self.rfile.read(n)) if n else None

        def route(self, method):
            body = self.body() if method in ("PUT", "POST") else None
            p = self.path
            if a.no_v2 or not p.startswith("/v2/collections/glove"):
                return self.send(404, {"error": "not found"})
            if p == "/v2/collections/glove" and method == "PUT":
                collections["glove"] = body
                return self.send(200, {"created": True})
            if "glove" not in collections:
                return self.send(404, {"error": "no such collection"})
            if p == "/v2/collections/glove" and method == "GET":
                return self.send(200, {"name": "glove", "documents": len(store.ids),
                                       "index": {"pending": store.pending()}})
            if p == "/v2/collections/glove/documents" and method == "POST":
                store.upsert(body["documents"])
                return self.send(200, {"upserted": len(body["documents"])})
            if p == "/v2/collections/glove/search" and method == "POST":
                lt = None
                for c in (body.get("filter") or {}).get("must", []):
                    if c.get("key") == "label":
                        lt = c["range"]["lt"]
                hits = store.search(body["vector"], int(body.get("limit", 10)), lt)
                return self.send(200, {"hits": hits, "plan": {"kind": "mock-exact", "filter_lt": lt}})
            return self.send(404, {"error": "not found"})

        def do_GET(self):
            self.route("GET")

        def do_PUT(self):
            self.route("PUT")

        def do_POST(self):
            self.route("POST")

    srv = ThreadingHTTPServer(("127.0.0.1", a.port), H)
    srv.daemon_threads = True
    print(f"kyrodb listening on http://127.0.0.1:{srv.server_address[1]}", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
