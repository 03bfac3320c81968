#!/usr/bin/env python3
"""bench/run hybrid: one-request hybrid search (vector + BM25 text + popularity_rank range + month range,
RRF over 100 candidates per component, top 10) on the real PyPI corpus, KyroDB over HTTP side by side with
PostgreSQL + pgvector + tsvector (one SQL statement, same fusion) and LanceDB hybrid search, all given the
same MiniLM vectors (made by KyroDB's own embedder, cached on disk).

    python bench.py --kyrodb BIN --models MODEL_ROOT --data pypi_summaries.tsv.gz --cache DIR [--quick]
                    [--docs N] [--queries Q] [--only kyrodb,postgres,lancedb]

Prints progress on stderr and one JSON object as the last stdout line.
"""
import argparse
import gzip
import glob
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

K, CANDIDATES, RRF_K = 10, 100, 60


def log(*a):
    print("[bench/hybrid]", *a, file=sys.stderr, flush=True)


def load_docs(path, n):
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        next(f)
        for line in f:
            c = line.rstrip("\n").split("\t")
            if len(c) < 5:
                continue
            rank = int(c[3]) if c[3] else None
            # 20 rows have no month: they get no timestamp (and never match a time range).
            docs.append({"id": c[0], "version": c[1], "month": c[2] or None, "rank": rank, "summary": c[4]})
            if len(docs) >= n:
                break
    return docs


class Kyro:
    """A `kyrodb serve` process on a free port with its own data dir."""

    def __init__(self, binary, models, work):
        env = {k: v for k, v in os.environ.items() if not k.startswith("KYRODB_")}
        env.update({"KYRODB_DISABLE_HTTP_LOG": "1", "RUST_LOG": "warn", "KYRODB_MODEL_DIR": models})
        self.log = open(os.path.join(work, "server.log"), "w+")
        self.proc = subprocess.Popen([binary, "serve", "--data-dir", os.path.join(work, "data"), "--port", "0"],
                                     stdout=self.log, stderr=self.log, env=env)
        deadline = time.time() + 120
        self.port = None
        while self.port is None:
            self.log.seek(0)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log.read())
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None or time.time() > deadline:
                sys.exit("kyrodb did not start: " + open(self.log.name).read()[-2000:])
            else:
                time.sleep(0.05)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def call(self, conn, method, path, body=None):
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:400]!r}")
        return json.loads(data) if data else None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def embeddings(docs, a):
    key = hashlib.sha256(("\n".join(d["id"] for d in docs)).encode()).hexdigest()[:16]
    path = os.path.join(a.cache, f"minilm-{len(docs)}-{key}.npy")
    if os.path.exists(path):
        log(f"embeddings: cached {path}")
        return np.load(path)
    log(f"embeddings: {len(docs)} summaries through KyroDB's embedder (POST /v2/embed; cached afterwards)")
    work = tempfile.mkdtemp(prefix="kyrodb-hybrid-embed-")
    k = Kyro(a.kyrodb, a.models, work)
    out = np.zeros((len(docs), 384), dtype=np.float32)
    try:
        c = k.conn()
        t = time.time()
        for s in range(0, len(docs), 256):
            texts = [d["summary"] for d in docs[s:s + 256]]
            r = k.call(c, "POST", "/v2/embed", {"texts": texts})
            out[s:s + len(texts)] = np.asarray(r["vectors"], dtype=np.float32)
            if (s // 256) % 40 == 0:
                rate = (s + len(texts)) / (time.time() - t)
                log(f"  {s + len(texts)}/{len(docs)} ({rate:.0f} texts/s)")
    finally:
        k.stop()
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(a.cache, exist_ok=True)
    np.save(path + ".tmp.npy", out)
    os.replace(path + ".tmp.npy", path)
    return out


STOP = set("a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
           "this to was will with".split())


def make_queries(docs, emb, n, seed=1):
    """Text = 2 content words of a sampled summary, vector = that summary's embedding, and one of four
    filter settings (none, month ≥ 2025-01, rank ≤ 5000, rank ≤ 15000 and month ≥ 2024-01)."""
    rng = random.Random(seed)
    qs = []
    while len(qs) < n:
        i = rng.randrange(len(docs))
        words = [w for w in re.findall(r"[A-Za-z][A-Za-z0-9]+", docs[i]["summary"]) if w.lower() not in STOP]
        if len(words) < 2:
            continue
        text = " ".join(rng.sample(words, 2))
        kind = len(qs) % 4
        f = [{}, {"month_from": "2025-01"}, {"rank_max": 5000}, {"rank_max": 15000, "month_from": "2024-01"}][kind]
        qs.append({"text": text, "vector": emb[i], "filter": f, "kind": ["none", "month>=2025", "rank<=5000",
                                                                        "rank<=15000&month>=2024"][kind]})
    return qs


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round((len(xs) - 1) * p)))] if xs else None


def _client(run_query, queries, ready, go, out):
    """One client process (forked: run_query and its data are inherited, nothing is pickled)."""
    state = {}
    for q in queries[:2]:  # connect and warm this process's connection before the clock starts
        run_query(q, state)
    ready.put(1)
    go.wait()
    lat = []
    for q in queries:
        t = time.perf_counter()
        run_query(q, state)
        lat.append((time.perf_counter() - t) * 1000)
    out.put(lat)


def measure(name, run_query, queries, conns_list=(1, 4), warm=20, processes=True):
    """p50/p99 latency and QPS at each connection count; run_query(q, conn_state) -> ids. Each connection
    is its own client process (one Python process's GIL and JSON work would cap the rate otherwise); with
    processes=False, threads (for clients that cannot be forked, e.g. LanceDB's in-process runtime)."""
    import multiprocessing as mp

    out = {}
    for q in queries[:warm]:
        run_query(q, {})
    for conns in conns_list:
        lat = []
        if processes:
            ctx = mp.get_context("fork")
            go, ready, res = ctx.Event(), ctx.Queue(), ctx.Queue()
            procs = [ctx.Process(target=_client, args=(run_query, queries[j::conns], ready, go, res), daemon=True)
                     for j in range(conns)]
            for p in procs:
                p.start()
            for _ in procs:  # every client connected and warmed its own connection
                ready.get(timeout=600)
            t = time.perf_counter()
            go.set()
            for _ in procs:
                lat.extend(res.get(timeout=3600))
            wall = time.perf_counter() - t
            for p in procs:
                p.join(60)
        else:
            lock = threading.Lock()
            idx = [0]

            def worker():
                state = {}
                while True:
                    with lock:
                        i = idx[0]
                        idx[0] += 1
                    if i >= len(queries):
                        return
                    t0 = time.perf_counter()
                    run_query(queries[i], state)
                    d = (time.perf_counter() - t0) * 1000
                    with lock:
                        lat.append(d)

            t = time.perf_counter()
            ths = [threading.Thread(target=worker) for _ in range(conns)]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            wall = time.perf_counter() - t
        out[conns] = {"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "qps": len(lat) / wall}
        log(f"{name}: {conns} conn ({'processes' if processes else 'threads'}): p50 {out[conns]['p50_ms']:.2f} ms, "
            f"p99 {out[conns]['p99_ms']:.2f} ms, {out[conns]['qps']:.0f} q/s")
    return out


def ndcg10(ranked, grade, pool):
    """nDCG@10 of `ranked` ids with gains 2^grade - 1, the ideal taken over `pool`."""
    import math
    dcg = sum((2 ** grade(i) - 1) / math.log2(r + 2) for r, i in enumerate(ranked[:10]))
    ideal = sorted((grade(i) for i in pool), reverse=True)[:10]
    idcg = sum((2 ** g - 1) / math.log2(r + 2) for r, g in enumerate(ideal))
    return None if idcg == 0 else dcg / idcg


def month_rfc(m):
    return f"{m}-01T00:00:00Z"


# ---------------------------------------------------------------- KyroDB
def run_kyrodb(docs, emb, queries, a):
    work = tempfile.mkdtemp(prefix="kyrodb-hybrid-")
    k = Kyro(a.kyrodb, a.models, work)
    try:
        c = k.conn()
        k.call(c, "PUT", "/v2/collections/pypi", {
            "vectors": {"emb": {"dim": 384, "metric": "cosine"}}, "text_fields": ["summary"],
            "fields": {"version": "keyword", "popularity_rank": "integer", "month": "datetime"},
            "timestamp_field": "month"})
        t = time.time()
        for s in range(0, len(docs), 500):  # ~2 MB of JSON per batch (the body limit is 8 MiB)
            batch = []
            for i in range(s, min(len(docs), s + 500)):
                d = docs[i]
                f = {"version": d["version"]}
                if d["month"]:
                    f["month"] = month_rfc(d["month"])
                if d["rank"] is not None:
                    f["popularity_rank"] = d["rank"]
                batch.append({"id": d["id"], "text": d["summary"], "vector": emb[i].tolist(), "fields": f})
            k.call(c, "POST", "/v2/collections/pypi/documents", {"documents": batch})
            if (s // 500) % 100 == 0:
                log(f"kyrodb ingest {s + len(batch)}/{len(docs)}")
        while True:
            info = k.call(c, "GET", "/v2/collections/pypi")
            if all(ix["pending"] == 0 for ix in info["indexes"].values()):
                break
            time.sleep(0.5)
        ingest_s = time.time() - t
        log(f"kyrodb: ingested and indexed {len(docs)} in {ingest_s:.1f}s")

        def body(q, exact=False):
            b = {"collection": "pypi", "vector_similarity": {"embedding": q["vector"].tolist(), "using": "emb"},
                 "text_search": q["text"], "fusion_strategy": {"strategy": "rrf", "k": RRF_K},
                 "candidates": CANDIDATES, "limit": K, "with": []}
            f = q["filter"]
            if "rank_max" in f:
                b["metadata_filters"] = {"must": [{"key": "popularity_rank", "range": {"lte": f["rank_max"]}}]}
            if "month_from" in f:
                b["temporal_range"] = {"from": month_rfc(f["month_from"])}
            if exact:
                b["exact"] = True
            return json.dumps(b)

        bodies = {id(q): body(q) for q in queries}

        def query(q, state):
            conn = state.get("c") or k.conn()
            state["c"] = conn
            conn.request("POST", "/v2/search/hybrid", body=bodies[id(q)], headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError(f"hybrid: {r.status} {data[:300]!r}")
            return [h["id"] for h in json.loads(data)["hits"]]

        m = measure("kyrodb", query, queries)
        stages = stage_times(k, c, queries, body)
        agree = 0
        results = {}
        recalls = []
        for q in queries:
            got = query(q, {})
            results[q["text"] + q["kind"]] = got
            exact = [h["id"] for h in k.call(c, "POST", "/v2/search/hybrid", json.loads(body(q, exact=True)))["hits"]]
            agree += got == exact
            if got != exact or len(recalls) < 100:
                # The vector list is the approximate component (BM25 top-k is exact): its recall@100
                # against an exact scan under the same filter, for every disagreement and a sample.
                b = json.loads(body(q))
                vs = {"vector": b["vector_similarity"]["embedding"], "using": "emb", "limit": CANDIDATES,
                      "ef": max(100, min(10000, 4 * CANDIDATES)), "with": []}
                f = b.get("metadata_filters", {"must": []})
                if "temporal_range" in b:
                    f = {"must": f["must"] + [{"key": "month", "range": {"gte": b["temporal_range"]["from"]}}]}
                if f["must"]:
                    vs["filter"] = f
                approx = {h["id"] for h in k.call(c, "POST", "/v2/collections/pypi/search", vs)["hits"]}
                full = [h["id"] for h in k.call(c, "POST", "/v2/collections/pypi/search", {**vs, "exact": True})["hits"]]
                recalls.append((got == exact, len(approx & set(full)) / max(1, len(full))))
        bad = [r for ok, r in recalls if not ok]
        sample = [r for _, r in recalls[:100]]
        vector_recall = {"sample_queries": len(sample), "recall_at_100": sum(sample) / max(1, len(sample)),
                         "disagreements": len(bad),
                         "recall_at_100_in_disagreements": sum(bad) / len(bad) if bad else None}
        log(f"kyrodb: exact-fusion agreement {agree / len(queries):.3f}; vector list recall@100 {vector_recall}")
        learned = learned_ranking(k, c, docs, emb, body, a)
        restart = {}
        for how in ("checkpoint", "rebuild"):
            # Graceful stop (writes the checkpoint: graphs + text segments), then a start that loads it;
            # "rebuild": the same start with the checkpoint file removed (every text analysed again).
            k.stop()
            if how == "rebuild":
                for f in glob.glob(os.path.join(work, "data", "search", "*.graph")):
                    os.remove(f)
            t = time.time()
            k = Kyro(a.kyrodb, a.models, work)
            took = time.time() - t
            c = k.conn()
            info = k.call(c, "GET", "/v2/collections/pypi")
            same = query(queries[0], {}) == results[queries[0]["text"] + queries[0]["kind"]]
            restart[how] = {"start_s": round(took, 2), "text_source": info.get("text_source"),
                            "graph_source": info.get("graph_source"), "same_answer": same}
            log(f"kyrodb restart ({how}): listening after {took:.2f}s; text: {info.get('text_source')}")
        return {"ingest_s": ingest_s, "latency": m, "exact_fusion_agreement": agree / len(queries), "results": results,
                "restart": restart, "stages_us": stages, "vector_recall": vector_recall, **learned}
    finally:
        k.stop()
        shutil.rmtree(work, ignore_errors=True)


def stage_times(k, c, queries, body):
    """Where a hybrid query's server time goes: each query once more with explain (one connection),
    p50/p99 of each plan stage's took_us by query kind and over all."""
    per = {}
    for q in queries:
        b = json.loads(body(q))
        b["explain"] = True
        plan = k.call(c, "POST", "/v2/search/hybrid", b)["plan"]
        for kind in (q["kind"], "all"):
            d = per.setdefault(kind, {})
            d.setdefault("total", []).append(plan["took_us"])
            for st in plan["stages"]:
                d.setdefault(st.get("component") or st.get("stage"), []).append(st["took_us"])
    out = {kind: {name: {"p50": pct(v, 0.5), "p99": pct(v, 0.99)} for name, v in d.items()} for kind, d in per.items()}
    log("kyrodb server time per stage (us, p50/p99): " + json.dumps(out["all"]))
    return out


def learned_ranking(k, c, docs, emb, body, a):
    """Simulated feedback whose relevance RRF cannot see: users value popular packages (grade 2 for
    popularity_rank <= 1000, 1 for <= 10000, else 0) among what the search shows them (its top 50).
    Feedback on training queries, then nDCG@10 of learned ranking vs RRF on new queries."""
    rank = {d["id"]: d["rank"] for d in docs}

    def grade(i):
        r = rank.get(i)
        return 0 if r is None else 2 if r <= 1000 else 1 if r <= 10000 else 0

    n_train, n_test = (150, 100) if a.quick else (400, 200)
    train = make_queries(docs, emb, n_train, seed=2)
    test = make_queries(docs, emb, n_test, seed=3)
    t = time.time()
    sent = 0
    for q in train:
        b = json.loads(body(q))
        b["limit"], b["with"] = 50, []
        shown = [h["id"] for h in k.call(c, "POST", "/v2/search/hybrid", b)["hits"]]
        labels = {i: grade(i) for i in shown if grade(i) > 0}
        if not labels:
            continue
        b.pop("collection")
        k.call(c, "POST", "/v2/collections/pypi/feedback", {"query": b, "labels": labels, "shown": shown})
        sent += 1
    deadline = time.time() + 300
    while True:
        info = k.call(c, "GET", "/v2/collections/pypi")["learned_ranking"]
        if not info["training_due"] or time.time() > deadline:
            break
        time.sleep(0.2)
    log(f"learned ranking: {sent} feedback examples in {time.time() - t:.1f}s; {info['decision']}")
    lrn, rrf = [], []
    for q in test:
        b = json.loads(body(q))
        b["limit"] = 100
        pool = [h["id"] for h in k.call(c, "POST", "/v2/search/hybrid", b)["hits"]]
        b["limit"], b["fusion_strategy"] = 10, "learned_ranking"
        got = [h["id"] for h in k.call(c, "POST", "/v2/search/hybrid", b)["hits"]]
        pool = list(dict.fromkeys(pool + got))
        nl, nr = ndcg10(got, grade, pool), ndcg10(pool[:10], grade, pool)
        if nl is not None:
            lrn.append(nl)
            rrf.append(nr)
    ml, mr = (sum(lrn) / len(lrn), sum(rrf) / len(rrf)) if lrn else (None, None)
    log(f"learned ranking: nDCG@10 {ml} vs rrf {mr} over {len(lrn)} test queries")
    return {"learned_ndcg10": ml, "rrf_ndcg10": mr, "learned_test_queries": len(lrn), "feedback_examples": sent,
            "learned_decision": info["decision"], "learned_weights": info.get("weights")}


# ---------------------------------------------------------------- PostgreSQL + pgvector
def run_postgres(docs, emb, queries, a):
    import pgserver
    import psycopg

    work = tempfile.mkdtemp(prefix="kyrodb-hybrid-pg-")
    srv = pgserver.get_server(os.path.join(work, "pg"), cleanup_mode="stop")
    try:
        uri = srv.get_uri()
        c = psycopg.connect(uri, autocommit=True)
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        c.execute("""CREATE TABLE docs (id text PRIMARY KEY, summary text NOT NULL,
                     tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', summary)) STORED,
                     version text, popularity_rank int, month timestamptz, emb vector(384))""")
        t = time.time()
        with c.cursor() as cur:
            with cur.copy("COPY docs (id, summary, version, popularity_rank, month, emb) FROM STDIN") as cp:
                for i, d in enumerate(docs):
                    cp.write_row((d["id"], d["summary"], d["version"], d["rank"],
                                  month_rfc(d["month"]) if d["month"] else None,
                                  "[" + ",".join(f"{x:.7g}" for x in emb[i]) + "]"))
        log(f"postgres: copied {len(docs)} rows in {time.time() - t:.1f}s; building indexes")
        # Enough for pgvector to build the full corpus's graph in memory (784,550 x 384 floats ~ 1.2 GB + links).
        c.execute("SET maintenance_work_mem = '4GB'")
        c.execute("CREATE INDEX ON docs USING hnsw (emb vector_cosine_ops) WITH (m = 16, ef_construction = 200)")
        c.execute("CREATE INDEX ON docs USING gin (tsv)")
        c.execute("CREATE INDEX ON docs (popularity_rank)")
        c.execute("CREATE INDEX ON docs (month)")
        c.execute("ANALYZE docs")
        ingest_s = time.time() - t
        log(f"postgres: ingested and indexed in {ingest_s:.1f}s")

        def sql(q):
            f = q["filter"]
            where, params = [], {}
            if "rank_max" in f:
                where.append("popularity_rank <= %(rank)s")
                params["rank"] = f["rank_max"]
            if "month_from" in f:
                where.append("month >= %(month)s")
                params["month"] = month_rfc(f["month_from"])
            w = (" AND " + " AND ".join(where)) if where else ""
            params.update({"v": "[" + ",".join(f"{x:.7g}" for x in q["vector"]) + "]", "t": q["text"],
                           "cand": CANDIDATES, "k": RRF_K, "lim": K})
            s = f"""
            WITH v AS (SELECT id, row_number() OVER (ORDER BY emb <=> %(v)s::vector, id) AS r FROM
                         (SELECT id, emb FROM docs WHERE true{w} ORDER BY emb <=> %(v)s::vector LIMIT %(cand)s) x),
                 t AS (SELECT id, row_number() OVER (ORDER BY rank DESC, id) AS r FROM
                         (SELECT id, ts_rank(tsv, query) AS rank FROM docs, plainto_tsquery('english', %(t)s) query
                          WHERE tsv @@ query{w} ORDER BY rank DESC, id LIMIT %(cand)s) y)
            SELECT id, sum(1.0 / (%(k)s + r)) AS score FROM (SELECT * FROM v UNION ALL SELECT * FROM t) u
            GROUP BY id ORDER BY score DESC, id LIMIT %(lim)s"""
            return s, params

        stmts = {id(q): sql(q) for q in queries}

        def query(q, state):
            conn = state.get("c")
            if conn is None:
                conn = psycopg.connect(uri, autocommit=True)
                conn.execute("SET hnsw.ef_search = 200")
                try:
                    conn.execute("SET hnsw.iterative_scan = relaxed_order")
                except Exception:
                    pass
                state["c"] = conn
            s, p = stmts[id(q)]
            return [r[0] for r in conn.execute(s, p).fetchall()]

        m = measure("postgres", query, queries)
        ver = c.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        pgv = c.execute("SHOW server_version").fetchone()[0]
        return {"ingest_s": ingest_s, "latency": m, "version": f"PostgreSQL {pgv}, pgvector {ver}"}
    finally:
        try:
            srv.cleanup()
        except Exception:
            pass
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- LanceDB
def run_lancedb(docs, emb, queries, a):
    import lancedb
    import pyarrow as pa
    from lancedb.rerankers import RRFReranker

    work = tempfile.mkdtemp(prefix="kyrodb-hybrid-lance-")
    try:
        db = lancedb.connect(work)
        t = time.time()
        months = [np.datetime64(d["month"] + "-01", "ms") if d["month"] else None for d in docs]
        table = pa.table({
            "id": [d["id"] for d in docs], "summary": [d["summary"] for d in docs],
            "popularity_rank": pa.array([d["rank"] for d in docs], type=pa.int32()),
            "month": pa.array(months, type=pa.timestamp("ms")),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), 384),
        })
        tbl = db.create_table("docs", data=table)
        tbl.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_HNSW_SQ")
        tbl.create_fts_index("summary")
        ingest_s = time.time() - t
        log(f"lancedb: ingested and indexed in {ingest_s:.1f}s")
        rr = RRFReranker(K=RRF_K)

        def query(q, state):
            f = q["filter"]
            where = []
            if "rank_max" in f:
                where.append(f"popularity_rank <= {f['rank_max']}")
            if "month_from" in f:
                where.append(f"month >= timestamp '{f['month_from']}-01 00:00:00'")
            s = tbl.search(query_type="hybrid", vector_column_name="vector").vector(q["vector"]).text(q["text"])
            if where:
                s = s.where(" AND ".join(where), prefilter=True)
            rows = s.rerank(rr).limit(K).to_list()
            return [r["id"] for r in rows]

        m = measure("lancedb", query, queries, processes=False)
        return {"ingest_s": ingest_s, "latency": m, "version": f"lancedb {lancedb.__version__}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kyrodb", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--docs", type=int)
    ap.add_argument("--queries", type=int)
    ap.add_argument("--only", default="kyrodb,postgres,lancedb")
    ap.add_argument("--embed-only", action="store_true", help="make and cache the embeddings, then stop")
    a = ap.parse_args()
    n = a.docs or (50_000 if a.quick else 784_550)
    nq = a.queries or (200 if a.quick else 1000)
    started = time.time()
    docs = load_docs(a.data, n)
    log(f"{len(docs)} documents from {a.data}")
    emb = embeddings(docs, a)
    if a.embed_only:
        log(f"embeddings cached ({len(emb)}); --embed-only: stopping")
        return
    queries = make_queries(docs, emb, nq)
    res, missing = {}, {}
    for name, fn in [("kyrodb", run_kyrodb), ("postgres", run_postgres), ("lancedb", run_lancedb)]:
        if name not in a.only.split(","):
            continue
        try:
            res[name] = fn(docs, emb, queries, a)
        except Exception as e:  # a peer that cannot run is reported, not hidden
            log(f"{name} failed: {e!r}")
            missing[name] = repr(e)[:300]
    g = lambda s, c, f: (res.get(s) or {}).get("latency", {}).get(c, {}).get(f)
    kq, pq, lq = g("kyrodb", 4, "qps"), g("postgres", 4, "qps"), g("lancedb", 4, "qps")
    r = lambda x, d=2: None if x is None else round(x, d)
    out = {"suite": "hybrid", "quick": a.quick, "docs": len(docs), "queries": len(queries),
           "candidates": CANDIDATES, "fusion": f"rrf k={RRF_K}",
           "kyrodb_p50_ms": r(g("kyrodb", 1, "p50_ms"), 3), "kyrodb_p99_ms": r(g("kyrodb", 1, "p99_ms"), 3),
           "kyrodb_qps": r(kq, 1), "kyrodb_qps_1conn": r(g("kyrodb", 1, "qps"), 1),
           "postgres_p50_ms": r(g("postgres", 1, "p50_ms"), 3), "postgres_p99_ms": r(g("postgres", 1, "p99_ms"), 3),
           "postgres_qps": r(pq, 1), "postgres_qps_1conn": r(g("postgres", 1, "qps"), 1),
           "lancedb_p50_ms": r(g("lancedb", 1, "p50_ms"), 3), "lancedb_p99_ms": r(g("lancedb", 1, "p99_ms"), 3),
           "lancedb_qps": r(lq, 1), "lancedb_qps_1conn": r(g("lancedb", 1, "qps"), 1),
           "ratio_vs_postgres": r(kq / pq, 2) if kq and pq else None,
           "ratio_vs_lancedb": r(kq / lq, 2) if kq and lq else None,
           "exact_fusion_agreement": r((res.get("kyrodb") or {}).get("exact_fusion_agreement"), 3),
           "learned_vs_rrf_ndcg": r(kl / kr, 3) if (kl := (res.get("kyrodb") or {}).get("learned_ndcg10"))
           and (kr := res["kyrodb"].get("rrf_ndcg10")) else None,
           "learned_ndcg10": r((res.get("kyrodb") or {}).get("learned_ndcg10"), 4),
           "rrf_ndcg10": r((res.get("kyrodb") or {}).get("rrf_ndcg10"), 4),
           "client": "one process per connection (LanceDB: threads, in-process)",
           "ingest_s": {k: r(v.get("ingest_s"), 1) for k, v in res.items()},
           "kyrodb_restart": (res.get("kyrodb") or {}).get("restart"),
           "kyrodb_stages_us": (res.get("kyrodb") or {}).get("stages_us"),
           "kyrodb_vector_recall": (res.get("kyrodb") or {}).get("vector_recall"),
           "peers": {k: v.get("version") for k, v in res.items() if v.get("version")},
           "missing": missing or None, "elapsed_s": int(time.time() - started)}
    out["notes"] = ("learned_vs_rrf_ndcg: nDCG@10 of learned ranking / RRF on new queries after simulated "
                    "feedback (grade by popularity_rank among the shown top 50)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
