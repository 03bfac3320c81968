#!/usr/bin/env python3
"""The peer: sentence-transformers (torch, CPU) running the same model files on the same texts.

    python peer_st.py MODEL_DIR TEXTS.json [--batches 1,8,32] [--seconds 5] [--single 200]
        [--reference reference_vectors.json]

Same protocol as crates/embed/examples/embed_bench.rs: texts/s per batch size for short and long texts
(model.encode with batch_size = the batch, normalised), single-text latency p50/p99, the minimum cosine
against the reference vectors. torch uses every core (torch.set_num_threads(os.cpu_count())), as KyroDB
does. Prints one JSON object.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer


def throughput(model, texts, batch, seconds):
    start = time.perf_counter()
    done, i = 0, 0
    while done < 3 * batch or time.perf_counter() - start < seconds:
        chunk = [texts[(i + k) % len(texts)] for k in range(batch)]
        i += batch
        model.encode(chunk, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)
        done += batch
    return done / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("texts")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--single", type=int, default=200)
    ap.add_argument("--reference")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    model = SentenceTransformer(a.model_dir, device="cpu")
    model.max_seq_length = 256
    load_s = time.perf_counter() - t
    texts = json.load(open(a.texts))
    short, long = texts["short"], texts["long"]
    model.encode([short[0], long[0]])
    out = {"peer": f"sentence-transformers {__import__('sentence_transformers').__version__} "
                   f"(torch {torch.__version__}, {torch.get_num_threads()} threads)",
           "load_s": load_s}
    for b in [int(x) for x in a.batches.split(",")]:
        out[f"texts_per_s_b{b}"] = throughput(model, short, b, a.seconds)
        out[f"texts_per_s_b{b}_long"] = throughput(model, long, b, a.seconds)
        print(f"[peer_st] batch {b}: short {out[f'texts_per_s_b{b}']:.1f}, long {out[f'texts_per_s_b{b}_long']:.1f} texts/s",
              file=os.sys.stderr)
    lat = []
    for i in range(a.single):
        t = time.perf_counter()
        model.encode([short[i % len(short)]], normalize_embeddings=True)
        lat.append((time.perf_counter() - t) * 1e3)
    lat.sort()
    out["single_p50_ms"] = lat[len(lat) // 2]
    out["single_p99_ms"] = lat[min(len(lat) - 1, round((len(lat) - 1) * 0.99))]
    if a.reference:
        r = json.load(open(a.reference))
        got = model.encode(r["texts"], batch_size=1, normalize_embeddings=True)
        want = np.array(r["vectors"])
        cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        out["cosine_min_vs_reference"] = float(cos.min())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
