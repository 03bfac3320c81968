"""Loads the bench data set into a fresh `kyrodb serve` and prints the planner's explain output (plan,
filter_us, index_us, took_us) for filtered searches at several selectivities, to see where a filtered
search over HTTP spends its time. Usage: planner_probe.py KYRODB_BIN DATA_DIR [N]"""
import json
import sys
import time

import numpy as np

import kyrodb_http as kh
from dataset import read_fvecs

binary, data_dir = sys.argv[1], sys.argv[2]
base = read_fvecs(f"{data_dir}/base.fvecs")
n = int(sys.argv[3]) if len(sys.argv) > 3 else base.shape[0]
base = base[:n]
queries = read_fvecs(f"{data_dir}/queries.fvecs")[:50]
labels = np.fromfile(f"{data_dir}/labels.u32", dtype="<u4")[:n]
server = kh.Server(binary)
host, port = server.start()
try:
    c = kh.Conn(host, port)
    spec = {"vectors": {"v": {"dim": int(base.shape[1]), "metric": "cosine"}}, "fields": {"label": "integer"}}
    c.request("PUT", f"/v2/collections/{kh.COLLECTION}", json.dumps(spec).encode())
    for lo in range(0, n, kh.BATCH):
        c.json("POST", f"/v2/collections/{kh.COLLECTION}/documents",
               kh.doc_body(range(lo, min(n, lo + kh.BATCH)), base[lo:lo + kh.BATCH], labels[lo:lo + kh.BATCH]))
    kh.wait_indexed(c, n, 1800)
    for s in (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.001):
        for exact in (False, True):
            rows = []
            t0 = time.perf_counter()
            for q in queries:
                body = json.loads(kh.search_body(q, 80, filt=kh.label_filter(s)))
                body["explain"] = True
                body["exact"] = exact
                r = c.json("POST", f"/v2/collections/{kh.COLLECTION}/search", json.dumps(body).encode())
                rows.append(r["plan"])
            wall = (time.perf_counter() - t0) / len(queries) * 1e6
            med = lambda k: float(np.median([p.get(k, 0) for p in rows]))
            print(json.dumps({"selectivity": s, "exact": exact, "strategy": rows[0]["strategy"],
                              "filter_us": med("filter_us"), "index_us": med("index_us"),
                              "took_us": med("took_us"), "http_wall_us": round(wall)}), flush=True)
finally:
    server.stop()
