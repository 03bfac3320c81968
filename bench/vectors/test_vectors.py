"""Tests of the vectors suite's own code (no real KyroDB needed):
  target/pyenv/vectors/bin/python -m unittest discover -s bench/vectors -p 'test_*.py'
(bench/vectors/run creates that venv.) Data is synthetic; the HTTP half runs against mock_kyrodb.py."""

import json
import os
import stat
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import dataset  # noqa: E402
import kyrodb_http  # noqa: E402
import kyrodb_inproc  # noqa: E402


def synthetic(tmp, n=3000, nq=40, d=16, seed=7):
    """A small data set in the suite's layout (files and arrays), with exact truth."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    labels = rng.integers(0, 1000, n, dtype=np.uint32)
    f = dataset.files(tmp)
    os.makedirs(tmp, exist_ok=True)
    dataset.write_fvecs(f["base"], base)
    dataset.write_fvecs(f["queries"], q)
    dataset.write_ivecs(f["truth"], dataset.exact_top_k(base, q))
    dataset.write_u32(f["labels"], labels)
    ft = {}
    for s in dataset.SELECTIVITIES:
        allowed = np.nonzero(labels < dataset.label_threshold(s))[0]
        ft[dataset.sel_name(s)] = dataset.exact_top_k(base, q, allowed=allowed)
        dataset.write_ivecs(f["filtered_truth"][dataset.sel_name(s)], ft[dataset.sel_name(s)])
    data = dict(f)
    data.update(base_v=base, queries_v=q, truth_v=dataset.read_ivecs(f["truth"]), labels_v=labels,
                filtered_truth_v=ft, n=n, queries_n=nq)
    return data


def script(path, text):
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


class Files(unittest.TestCase):
    def test_vecs_round_trip_and_layout(self):
        with tempfile.TemporaryDirectory() as tmp:
            x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
            p = os.path.join(tmp, "x.fvecs")
            dataset.write_fvecs(p, x)
            with open(p, "rb") as fh:
                raw = fh.read()
            self.assertEqual(len(raw), 3 * (4 + 4 * 4))
            self.assertEqual(int.from_bytes(raw[:4], "little"), 4)
            self.assertTrue(np.array_equal(dataset.read_fvecs(p), x))
            i = np.array([[5, -1], [0, 2**31 - 1]], dtype=np.int32)
            dataset.write_ivecs(p, i)
            self.assertTrue(np.array_equal(dataset.read_ivecs(p), i))
            dataset.write_u32(p, np.array([0, 999, 7], dtype=np.uint32))
            with open(p, "rb") as fh:
                raw = fh.read()
            self.assertEqual(raw, b"\0\0\0\0\xe7\x03\0\0\x07\0\0\0")

    def test_exact_top_k_matches_naive(self):
        rng = np.random.default_rng(1)
        base = rng.standard_normal((500, 8)).astype(np.float32)
        q = rng.standard_normal((9, 8)).astype(np.float32)
        got = dataset.exact_top_k(base, q, k=10)
        for r in range(9):
            s = base.astype(np.float64) @ q[r].astype(np.float64)
            self.assertEqual(list(got[r]), list(np.argsort(-s, kind="stable")[:10]))
        allowed = np.array([3, 17, 40])
        got = dataset.exact_top_k(base, q, k=10, allowed=allowed)
        self.assertTrue(set(got[0][:3]) == {3, 17, 40} and list(got[0][3:]) == [-1] * 7)

    def test_recall(self):
        truth = np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
        self.assertEqual(dataset.recall([[1, 2, 3, 4, 5, 11, 12, 13, 14, 15]], truth), 0.5)
        self.assertEqual(dataset.recall([[-1] * 10], truth), 0.0)


class Ratio(unittest.TestCase):
    def test_interpolation(self):
        c = [{"ef": 20, "recall": 0.9, "qps": 1000}, {"ef": 80, "recall": 0.99, "qps": 100},
             {"ef": 40, "recall": 0.95, "qps": 500}]
        q, note = bench.qps_at_recall(c)
        self.assertAlmostEqual(q, 500 + (0.02 / 0.04) * (100 - 500))
        self.assertIsNone(note)
        self.assertEqual(bench.qps_at_recall([{"ef": 10, "recall": 0.5, "qps": 9}])[0], None)
        self.assertEqual(bench.qps_at_recall([{"ef": 10, "recall": 0.98, "qps": 9}])[0], 9)


FAKE_OUTPUT = [
    '{"progress":"building"}\n',
    'not json\n',
    '{"build_s": 1.5, "index_bytes_per_vector": 310.2, "curve": [{"ef": 20, "recall": 0.9, "qps": 30000},'
    ' {"ef": 80, "recall": 0.99, "qps": 10000}], "filtered": [{"selectivity": 0.1, "ef": 80, "recall": 0.98,'
    ' "qps": 9000}, {"selectivity": 0.001, "ef": 80, "recall": 1.0, "qps": 20000}]}\n',
]


class InProcess(unittest.TestCase):
    def test_parse(self):
        r = kyrodb_inproc.parse(FAKE_OUTPUT)
        self.assertEqual(r["build_s"], 1.5)
        self.assertEqual([p["ef"] for p in r["curve"]], [20, 80])
        self.assertEqual(r["filtered"][1]["selectivity"], "0.001")
        with self.assertRaises(kyrodb_inproc.Missing):
            kyrodb_inproc.parse(['{"build_s": 1}\n'])  # run() turns this into Failed
        with self.assertRaises(kyrodb_inproc.Missing):
            kyrodb_inproc.parse(["cargo says hi\n"])

    def test_run_fake_binary_and_its_arguments(self):
        with tempfile.TemporaryDirectory() as tmp:
            data = synthetic(os.path.join(tmp, "d"), n=200, nq=5)
            args = os.path.join(tmp, "args")
            out = os.path.join(tmp, "out")
            with open(out, "w") as fh:
                fh.writelines(FAKE_OUTPUT)
            fake = script(os.path.join(tmp, "fake"),
                          f'#!/bin/sh\nprintf "%s\\n" "$@" > {args}\necho compiling >&2\ncat {out}\n')
            os.environ["KYRODB_VECTORS_BENCH"] = fake
            try:
                r = kyrodb_inproc.run(data, [20, 80], 16, 200, tmp)
            finally:
                del os.environ["KYRODB_VECTORS_BENCH"]
            self.assertEqual(r["curve"][1]["qps"], 10000)
            with open(args) as fh:
                got = fh.read().split("\n")
            for flag, val in [("--base", data["base"]), ("--labels", data["labels"]), ("--ef", "20,80"),
                              ("--selectivity", "0.1,0.01,0.001"), ("--metric", "cosine"), ("--m", "16"),
                              ("--ef-construction", "200"),
                              ("--filtered-truth-prefix", data["filtered_truth_prefix"])]:
                self.assertEqual(got[got.index(flag) + 1], val)
            self.assertTrue(os.path.exists(data["filtered_truth_prefix"] + "0.001.ivecs"))

    def test_failing_binary_is_missing(self):
        os.environ["KYRODB_VECTORS_BENCH"] = "sh -c 'echo \"error: no example target named vectors_bench\" >&2; exit 101' x"
        try:
            with self.assertRaises(kyrodb_inproc.Missing) as e:
                kyrodb_inproc.run(synthetic(tempfile.mkdtemp(), n=50, nq=2), [20], 16, 200, "/")
            self.assertIn("no example target", str(e.exception))
            os.environ["KYRODB_VECTORS_BENCH"] = "sh -c 'echo \"error[E0425]: cannot find value\" >&2; exit 101' x"
            with self.assertRaises(kyrodb_inproc.Failed):
                kyrodb_inproc.run(synthetic(tempfile.mkdtemp(), n=50, nq=2), [20], 16, 200, "/")
            os.environ["KYRODB_VECTORS_BENCH"] = "echo '{\"build_s\": 1}'"
            with self.assertRaises(kyrodb_inproc.Failed):
                kyrodb_inproc.run(synthetic(tempfile.mkdtemp(), n=50, nq=2), [20], 16, 200, "/")
        finally:
            del os.environ["KYRODB_VECTORS_BENCH"]


class Http(unittest.TestCase):
    def mock(self, tmp, *flags):
        return script(os.path.join(tmp, "kyrodb"),
                      f'#!/bin/sh\nexec "{sys.executable}" "{HERE}/mock_kyrodb.py" "$@" {" ".join(flags)}\n')

    def test_against_mock(self):
        with tempfile.TemporaryDirectory() as tmp:
            data = synthetic(os.path.join(tmp, "d"))
            r = kyrodb_http.run(self.mock(tmp, "--index-delay-s", "0.3"), data, [20, 80], 80,
                                visible_count=10, settle_timeout_s=30)
            self.assertEqual([p["recall"] for p in r["curve"]], [1.0, 1.0])
            for s, v in r["filtered"].items():
                self.assertEqual(v["recall"], 1.0, s)
                self.assertEqual(v["plan"]["filter_lt"], dataset.label_threshold(float(s)))
            self.assertGreater(r["ingest_docs_per_s"], 0)
            self.assertGreaterEqual(r["build_s"], 0.3)
            self.assertGreaterEqual(r["visible_p50_ms"], 300)

    def test_no_v2_api_is_missing(self):
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaises(kyrodb_http.Missing) as e:
                kyrodb_http.run(self.mock(tmp, "--no-v2"), synthetic(os.path.join(tmp, "d"), n=100, nq=2),
                                [20], 80, visible_count=2, settle_timeout_s=5)
            self.assertIn("404", str(e.exception))

    def test_no_binary_is_missing(self):
        with self.assertRaises(kyrodb_http.Missing):
            kyrodb_http.run("/nonexistent/kyrodb", {"base_v": None}, [20], 80, 1, 1)


if __name__ == "__main__":
    unittest.main()
