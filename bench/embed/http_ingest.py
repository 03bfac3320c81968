#!/usr/bin/env python3
"""End to end over HTTP: `kyrodb serve` with the model, a collection whose vector field is embedded
from its text, documents ingested with auto_embed in batches (one connection; each batch answered once
durable and searchable), then single /v2/embed latency over HTTP.

    python http_ingest.py KYRODB_BIN MODEL_ROOT TEXTS.json [--docs N] [--batch 32]

Prints one JSON object: http_ingest_docs_per_s, http_embed_single_p50_ms / _p99_ms.
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("model_root", help="the KYRODB_MODEL_DIR holding all-MiniLM-L6-v2/")
    ap.add_argument("texts")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--single", type=int, default=200)
    a = ap.parse_args()
    short = json.load(open(a.texts))["short"]
    work = tempfile.mkdtemp(prefix="kyrodb-embed-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYRODB_")}
    env.update({"KYRODB_DISABLE_HTTP_LOG": "1", "RUST_LOG": "warn", "KYRODB_MODEL_DIR": a.model_root})
    log = open(os.path.join(work, "server.log"), "w+")
    proc = subprocess.Popen([a.binary, "serve", "--data-dir", os.path.join(work, "data"), "--port", "0"],
                            stdout=log, stderr=log, env=env)
    try:
        port = None
        deadline = time.time() + 120
        while port is None and time.time() < deadline:
            log.seek(0)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read())
            if m:
                port = int(m.group(1))
            elif proc.poll() is not None:
                sys.exit("kyrodb exited: " + open(log.name).read()[-2000:])
            else:
                time.sleep(0.05)
        if port is None:
            sys.exit("kyrodb did not start")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

        def call(method, path, body):
            conn.request(method, path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status >= 300:
                sys.exit(f"{method} {path}: {r.status} {data[:300]!r}")
            return json.loads(data)

        call("PUT", "/v2/collections/bench", {
            "vectors": {"text": {"dim": 384, "metric": "cosine",
                                 "embed": {"model": "all-MiniLM-L6-v2", "source": "body"}}},
            "text_fields": ["body"]})
        bodies = []
        for start in range(0, a.docs, a.batch):
            docs = [{"id": f"d{i}", "text": short[i % len(short)], "auto_embed": True}
                    for i in range(start, min(a.docs, start + a.batch))]
            bodies.append({"documents": docs})
        t = time.perf_counter()
        for b in bodies:
            call("POST", "/v2/collections/bench/documents", b)
        ingest_s = time.perf_counter() - t
        print(f"[http_ingest] {a.docs} docs with auto_embed in {ingest_s:.1f}s: {a.docs / ingest_s:.1f} docs/s",
              file=sys.stderr)
        hit = call("POST", "/v2/collections/bench/search", {"text": short[5], "using": "text", "limit": 1})
        found = hit["hits"][0]["id"] if hit["hits"] else None
        lat = []
        for i in range(a.single):
            t = time.perf_counter()
            call("POST", "/v2/embed", {"texts": [short[i % len(short)]]})
            lat.append((time.perf_counter() - t) * 1e3)
        lat.sort()
        print(json.dumps({"http_ingest_docs_per_s": a.docs / ingest_s, "http_docs": a.docs,
                          "http_batch": a.batch, "http_text_search_top": found,
                          "http_embed_single_p50_ms": lat[len(lat) // 2],
                          "http_embed_single_p99_ms": lat[min(len(lat) - 1, round((len(lat) - 1) * 0.99))]}))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
