"""KyroDB's index in-process: the Rust example `vectors_bench` of kyrodb-search, run with cargo on the
suite's files. It prints JSON lines; the last one is
  {"build_s":…, "index_bytes_per_vector":…, "curve":[{"ef","recall","qps"}],
   "filtered":[{"selectivity","ef","recall","qps"}]}
KYRODB_VECTORS_BENCH (a command line, split like a shell would) replaces
`cargo run --release -p kyrodb-search --example vectors_bench --`, e.g. to run a prebuilt binary.
"""

import json
import os
import shlex
import subprocess
import sys
import threading

from dataset import SELECTIVITIES, log, sel_name

DEFAULT_CMD = ["cargo", "run", "--release", "-p", "kyrodb-search", "--example", "vectors_bench", "--"]


class Missing(Exception):
    """The example is not there (cargo knows no such target, or the command does not exist)."""


class Failed(Exception):
    """The example is there but failed, or printed no valid result: an error, not an absence."""


def command(data, efs, m, ef_construction):
    prefix = shlex.split(os.environ["KYRODB_VECTORS_BENCH"]) if os.environ.get("KYRODB_VECTORS_BENCH") \
        else DEFAULT_CMD
    return prefix + [
        "--base", data["base"], "--queries", data["queries"], "--truth", data["truth"],
        "--labels", data["labels"], "--selectivity", ",".join(sel_name(s) for s in SELECTIVITIES),
        "--filtered-truth-prefix", data["filtered_truth_prefix"],
        "--ef", ",".join(str(e) for e in efs), "--metric", "cosine",
        "--m", str(m), "--ef-construction", str(ef_construction)]


def _num(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Missing(f"vectors_bench output: {what} is {v!r}, not a number")
    return float(v)


def parse(lines):
    """The result from the binary's stdout lines: the last line that is a JSON object, validated."""
    obj = None
    for line in reversed(lines):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
            break
        except ValueError:
            continue
    if not isinstance(obj, dict):
        raise Missing("vectors_bench printed no JSON object")
    for key in ("build_s", "index_bytes_per_vector", "curve", "filtered"):
        if key not in obj:
            raise Missing(f"vectors_bench output has no {key!r}: {json.dumps(obj)[:300]}")
    out = {"build_s": _num(obj["build_s"], "build_s"),
           "index_bytes_per_vector": _num(obj["index_bytes_per_vector"], "index_bytes_per_vector"),
           "curve": [], "filtered": []}
    if not isinstance(obj["curve"], list) or not obj["curve"]:
        raise Missing("vectors_bench output: curve is empty or not a list")
    for p in obj["curve"]:
        out["curve"].append({"ef": int(_num(p.get("ef"), "curve.ef")),
                             "recall": _num(p.get("recall"), "curve.recall"),
                             "qps": _num(p.get("qps"), "curve.qps")})
    if not isinstance(obj["filtered"], list):
        raise Missing("vectors_bench output: filtered is not a list")
    for p in obj["filtered"]:
        out["filtered"].append({"selectivity": sel_name(_num(p.get("selectivity"), "filtered.selectivity")),
                                "ef": int(_num(p.get("ef"), "filtered.ef")),
                                "recall": _num(p.get("recall"), "filtered.recall"),
                                "qps": _num(p.get("qps"), "filtered.qps")})
    return out


def run(data, efs, m, ef_construction, cwd):
    cmd = command(data, efs, m, ef_construction)
    log("kyrodb (in-process): " + " ".join(shlex.quote(c) for c in cmd))
    try:
        p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise Missing(f"cannot start {cmd[0]}: {e}")
    err_tail = []

    def pump_stderr():
        for line in p.stderr:
            sys.stderr.write("  | " + line)
            err_tail.append(line.rstrip())
            del err_tail[:-20]

    t = threading.Thread(target=pump_stderr, daemon=True)
    t.start()
    lines = []
    for line in p.stdout:
        sys.stderr.write("  > " + line)
        lines.append(line)
    rc = p.wait()
    t.join()
    p.stdout.close()
    p.stderr.close()
    if rc != 0:
        why = next((l for l in reversed(err_tail) if "error" in l.lower()), err_tail[-1] if err_tail else "")
        if any("no example target named" in l for l in err_tail):
            raise Missing(f"vectors_bench is not in this tree: {why.strip()}")
        raise Failed(f"vectors_bench exited with {rc}: {why.strip()}")
    try:
        return parse(lines)
    except Missing as e:
        raise Failed(str(e))
