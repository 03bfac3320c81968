"""The peers through their Python bindings: hnswlib and faiss-cpu (IndexHNSWFlat), M=16,
efConstruction=200, inner product on the normalised vectors (= cosine), one thread, one query per call.

Each returns {"build_s", "index_bytes_per_vector", "curve": [{"ef", "recall", "qps"}],
"filtered": {"<s>": {"ef", "recall", "qps"}}}. QPS is queries / wall time of a loop that sends one query
at a time (the binding's per-call overhead is part of it, as the HTTP client's is for kyrodb_http).
"""

import time

import numpy as np

from dataset import K, label_threshold, log, recall, sel_name

M = 16
EF_CONSTRUCTION = 200
WARMUP_QUERIES = 20


def timed_queries(search, queries):
    """Runs search(q) -> ids for every query, one at a time; returns (list of id arrays, qps)."""
    for q in queries[:WARMUP_QUERIES]:
        search(q)
    out = []
    t = time.perf_counter()
    for q in queries:
        out.append(search(q))
    dt = time.perf_counter() - t
    return out, len(queries) / dt


def run_hnswlib(data, efs, filter_ef):
    import hnswlib

    base, queries = data["base_v"], data["queries_v"]
    n, d = base.shape
    index = hnswlib.Index(space="ip", dim=d)
    index.init_index(max_elements=n, ef_construction=EF_CONSTRUCTION, M=M, random_seed=100)
    index.set_num_threads(1)
    log(f"hnswlib: building ({n} vectors, one thread)")
    t = time.perf_counter()
    index.add_items(base, np.arange(n), num_threads=1)
    build_s = time.perf_counter() - t
    log(f"hnswlib: built in {build_s:.1f}s")
    out = {"build_s": build_s, "index_bytes_per_vector": index.index_file_size() / n,
           "curve": [], "filtered": {}}
    failures = [0]

    def search(q, **kw):
        try:
            labels, _ = index.knn_query(q, k=K, num_threads=1, **kw)
            return labels[0]
        except RuntimeError:
            # hnswlib raises when it finds fewer than k results (can happen under a filter).
            failures[0] += 1
            return np.full(K, -1)

    for ef in efs:
        index.set_ef(ef)
        res, qps = timed_queries(search, queries)
        r = recall(res, data["truth_v"])
        out["curve"].append({"ef": ef, "recall": r, "qps": qps})
        log(f"hnswlib: ef={ef} recall={r:.4f} qps={qps:.0f}")
    index.set_ef(filter_ef)
    labels = data["labels_v"]
    for s_name, ftruth in data["filtered_truth_v"].items():
        allowed = set(np.nonzero(labels < label_threshold(float(s_name)))[0].tolist())
        # set.__contains__ is a C function: the cheapest callback hnswlib's filter can take from Python.
        allow = allowed.__contains__
        failures[0] = 0
        res, qps = timed_queries(lambda q: search(q, filter=allow), queries)
        r = recall(res, ftruth)
        out["filtered"][s_name] = {"ef": filter_ef, "recall": r, "qps": qps}
        extra = f" ({failures[0]} queries returned fewer than {K})" if failures[0] else ""
        log(f"hnswlib: filtered s={s_name} ef={filter_ef} recall={r:.4f} qps={qps:.0f}{extra}")
    return out


def run_faiss(data, efs, filter_ef):
    import faiss

    faiss.omp_set_num_threads(1)
    base, queries = data["base_v"], data["queries_v"]
    n, d = base.shape
    index = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    log(f"faiss: building ({n} vectors, one thread)")
    t = time.perf_counter()
    index.add(base)
    build_s = time.perf_counter() - t
    log(f"faiss: built in {build_s:.1f}s")
    out = {"build_s": build_s,
           "index_bytes_per_vector": faiss.serialize_index(index).nbytes / n,
           "curve": [], "filtered": {}}

    def searcher(params):
        def search(q):
            _, ids = index.search(q.reshape(1, -1), K, params=params)
            return ids[0]
        return search

    for ef in efs:
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef
        res, qps = timed_queries(searcher(params), queries)
        r = recall(res, data["truth_v"])
        out["curve"].append({"ef": ef, "recall": r, "qps": qps})
        log(f"faiss: ef={ef} recall={r:.4f} qps={qps:.0f}")
    labels = data["labels_v"]
    for s_name, ftruth in data["filtered_truth_v"].items():
        mask = (labels < label_threshold(float(s_name))).astype(np.uint8)
        bitmap = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(bitmap)
        params = faiss.SearchParametersHNSW()
        params.efSearch = filter_ef
        params.sel = sel
        res, qps = timed_queries(searcher(params), queries)
        r = recall(res, ftruth)
        out["filtered"][s_name] = {"ef": filter_ef, "recall": r, "qps": qps}
        log(f"faiss: filtered s={s_name} ef={filter_ef} recall={r:.4f} qps={qps:.0f}")
        del sel, bitmap
    return out


def versions():
    import faiss
    import hnswlib  # noqa: F401
    from importlib.metadata import version
    return {"hnswlib": version("hnswlib"), "faiss-cpu": faiss.__version__, "numpy": np.__version__}


__all__ = ["run_hnswlib", "run_faiss", "versions", "sel_name"]
