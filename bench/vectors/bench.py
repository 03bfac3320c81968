"""bench/vectors driver: data set, peers, KyroDB in-process and over HTTP; one JSON object on the last
stdout line. Run through bench/vectors/run (which makes the venv and builds kyrodb); see README.md."""

import argparse
import json
import os
import sys
import time
import traceback

import dataset
import kyrodb_http
import kyrodb_inproc
import peers
from dataset import log

TARGET_RECALL = 0.97
M = 16
EF_CONSTRUCTION = 200


def qps_at_recall(curve, target=TARGET_RECALL):
    """QPS at `target` recall, linearly interpolated between the two points (ordered by ef) around the
    first one that reaches it. None if no point reaches it. If the first point already does, its QPS
    (a lower bound: a smaller ef would be faster)."""
    pts = sorted(curve, key=lambda p: p["ef"])
    for i, p in enumerate(pts):
        if p["recall"] >= target:
            if i == 0:
                return p["qps"], "first point already above"
            a = pts[i - 1]
            if p["recall"] == a["recall"]:
                return p["qps"], None
            f = (target - a["recall"]) / (p["recall"] - a["recall"])
            return a["qps"] + f * (p["qps"] - a["qps"]), None
    return None, "never reaches it"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cache", required=True, help="cache dir (wheel and generated files)")
    ap.add_argument("--root", required=True, help="repository root (cwd for cargo)")
    ap.add_argument("--pip", default="pip")
    ap.add_argument("--kyrodb", default="", help="kyrodb binary for the HTTP half ('' = missing)")
    ap.add_argument("--kyrodb-missing", default="", help="why the kyrodb binary is missing")
    ap.add_argument("--n", type=int, default=None, help="base vectors (default: 50000 quick, all full)")
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--ef", default=None, help="comma-separated ef list")
    ap.add_argument("--filter-ef", type=int, default=80)
    ap.add_argument("--only", default="kyrodb,kyrodb_http,hnswlib,faiss",
                    help="comma-separated systems to run")
    a = ap.parse_args()

    n = a.n if a.n is not None else (50_000 if a.quick else None)
    nq = a.queries if a.queries is not None else (200 if a.quick else 1000)
    efs = [int(x) for x in (a.ef or ("20,80,320" if a.quick else "10,20,40,80,160,320")).split(",")]
    only = set(a.only.split(","))
    t_start = time.perf_counter()

    data = dataset.prepare(a.cache, n, nq, a.pip)
    sels = list(data["filtered_truth_v"].keys())
    log(f"{data['n']} base vectors, {data['queries_n']} queries, ef {efs}, filtered at ef {a.filter_ef}, "
        f"selectivities {sels}")

    results, missing, errors = {}, {}, {}
    # One system at a time: each has the machine to itself.
    if "hnswlib" in only:
        results["hnswlib"] = peers.run_hnswlib(data, efs, a.filter_ef)
    if "faiss" in only:
        results["faiss"] = peers.run_faiss(data, efs, a.filter_ef)
    if "kyrodb" in only:
        try:
            results["kyrodb"] = kyrodb_inproc.run(data, efs, M, EF_CONSTRUCTION, a.root)
        except kyrodb_inproc.Missing as e:
            missing["kyrodb"] = str(e)
            log(f"kyrodb (in-process) MISSING: {e}")
        except Exception as e:  # a failure, not an absence: reported, and the exit code says so
            errors["kyrodb"] = f"{type(e).__name__}: {e}"
            log(f"kyrodb (in-process) FAILED:\n{traceback.format_exc()}")
    if "kyrodb_http" in only:
        try:
            if not a.kyrodb:
                raise kyrodb_http.Missing(a.kyrodb_missing or "no kyrodb binary")
            results["kyrodb_http"] = kyrodb_http.run(
                a.kyrodb, data, efs, a.filter_ef, visible_count=200 if a.quick else 1000,
                settle_timeout_s=900 if a.quick else 7200)
        except kyrodb_http.Missing as e:
            missing["kyrodb_http"] = str(e)
            log(f"kyrodb_http MISSING: {e}")
        except Exception as e:
            errors["kyrodb_http"] = f"{type(e).__name__}: {e}"
            log(f"kyrodb_http FAILED:\n{traceback.format_exc()}")

    curve = []
    for system in ("kyrodb", "kyrodb_http", "hnswlib", "faiss"):
        for p in results.get(system, {}).get("curve", []):
            curve.append({"system": system, "ef": p["ef"], "recall": round(p["recall"], 4),
                          "qps": round(p["qps"], 1)})

    at = {}
    for system in ("kyrodb", "hnswlib", "faiss", "kyrodb_http"):
        if system in results:
            q, note = qps_at_recall(results[system]["curve"])
            at[system] = q
            if note:
                log(f"{system}: recall {TARGET_RECALL}: {note}" + ("" if q is None else f" (qps {q:.0f})"))
    ratio = None
    if at.get("kyrodb") is not None and at.get("hnswlib"):
        ratio = round(at["kyrodb"] / at["hnswlib"], 3)
    else:
        if "kyrodb" not in results:
            why = "kyrodb in-process is missing"
        elif "hnswlib" not in results:
            why = "hnswlib was not run"
        elif at.get("kyrodb") is None:
            why = f"kyrodb's curve never reaches recall {TARGET_RECALL}"
        else:
            why = f"hnswlib's curve never reaches recall {TARGET_RECALL}"
        log(f"qps_ratio_vs_hnswlib_at_0_97 is null: {why}")

    http_r = results.get("kyrodb_http")
    def by_sel(r, key):
        return {s: round(r["filtered"][s][key], 4 if key == "recall" else 1) for s in sels} if r else None

    peers_filtered = {name: {s: {"ef": v["ef"], "recall": round(v["recall"], 4), "qps": round(v["qps"], 1)}
                             for s, v in results[name]["filtered"].items()}
                      for name in ("hnswlib", "faiss") if name in results}
    inproc = results.get("kyrodb")

    def rnd(x, d=3):
        return None if x is None else round(x, d)

    out = {
        "suite": "vectors",
        "quick": a.quick,
        "dataset": f"glove-6b-50d ({dataset.WHEEL_PACKAGE}=={dataset.WHEEL_VERSION}), normalised, cosine",
        "n": data["n"],
        "queries": data["queries_n"],
        "dim": int(data["base_v"].shape[1]),
        "k": dataset.K,
        "m": M,
        "ef_construction": EF_CONSTRUCTION,
        "curve": curve,
        "qps_at_0_97": {s: rnd(q, 1) for s, q in at.items()},
        "qps_ratio_vs_hnswlib_at_0_97": ratio,
        "filter_ef": a.filter_ef,
        "filtered_recall": by_sel(http_r, "recall"),
        "filtered_qps": by_sel(http_r, "qps"),
        "kyrodb_filtered": inproc["filtered"] if inproc else None,
        "peers_filtered": peers_filtered,
        "build_s": {s: rnd(results[s]["build_s"], 2) if s in results else None
                    for s in ("kyrodb", "kyrodb_http", "hnswlib", "faiss")},
        "ingest_docs_per_s": rnd(http_r["ingest_docs_per_s"], 1) if http_r else None,
        "visible_p50_ms": rnd(http_r["visible_p50_ms"]) if http_r else None,
        "visible_p99_ms": rnd(http_r["visible_p99_ms"]) if http_r else None,
        "write_ack_p99_ms": rnd(http_r["write_ack_p99_ms"]) if http_r else None,
        "ack_to_visible_p99_ms": rnd(http_r.get("ack_to_visible_p99_ms")) if http_r else None,
        "index_bytes_per_vector": rnd(inproc["index_bytes_per_vector"], 1) if inproc else None,
        "peers_index_bytes_per_vector": {s: rnd(results[s]["index_bytes_per_vector"], 1)
                                         for s in ("hnswlib", "faiss") if s in results},
        "missing": missing,
        "errors": errors,
        "versions": peers.versions(),
        "elapsed_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(out, separators=(",", ":")), flush=True)
    if errors:
        sys.exit(3)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
