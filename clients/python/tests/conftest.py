"""Starts real `kyrodb serve` processes for the tests.

KYRODB_BIN names the binary (the Rust test that runs this suite passes its own build; else
target/release/kyrodb or target/debug/kyrodb of this checkout); KYRODB_MODEL_DIR an installed
embedding model (tests that need it are skipped without it)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def binary() -> str:
    if os.environ.get("KYRODB_BIN"):
        return os.environ["KYRODB_BIN"]
    for p in ("target/release/kyrodb", "target/debug/kyrodb"):
        if os.path.exists(os.path.join(ROOT, p)):
            return os.path.join(ROOT, p)
    raise RuntimeError("no kyrodb binary: set KYRODB_BIN or build it (cargo build -p kyrodb)")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: str

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start(data_dir: str, env: dict[str, str] | None = None) -> Server:
    """A server on a free port; returns once it printed its address (or fails with its log)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("KYRODB_")}
    if os.environ.get("KYRODB_MODEL_DIR"):
        e["KYRODB_MODEL_DIR"] = os.environ["KYRODB_MODEL_DIR"]
    e.update({"KYRODB_DISABLE_HTTP_LOG": "1", "RUST_LOG": "warn"})
    e.update(env or {})
    log = os.path.join(data_dir + ".log")
    out = open(log, "wb")
    proc = subprocess.Popen(
        [binary(), "serve", "--data-dir", data_dir, "--port", "0"], stdout=out, stderr=out, env=e
    )
    deadline = time.monotonic() + 120
    while True:
        with open(log, "rb") as f:
            m = re.search(rb"listening on (https?://127\.0\.0\.1:\d+)", f.read())
        if m:
            return Server(url=m.group(1).decode(), proc=proc, log=log)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("kyrodb did not start:\n" + open(log).read()[-3000:])
        time.sleep(0.02)


@pytest.fixture(scope="session")
def workdir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="kyrodb-sdk-") as d:
        yield d


@pytest.fixture(scope="session")
def server(workdir: str) -> Iterator[Server]:
    s = start(os.path.join(workdir, "open"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def auth_server(workdir: str) -> Iterator[Server]:
    keys = "admin:sdk-admin-token,write:sdk-write-token,read:sdk-read-token"
    s = start(os.path.join(workdir, "auth"), {"KYRODB_API_KEYS": keys})
    yield s
    s.stop()


@pytest.fixture(scope="session")
def model_available(server: Server) -> bool:
    import httpx

    return httpx.get(server.url + "/build_info").json().get("auto_embed") == "available"


@pytest.fixture
def needs_model(model_available: bool) -> None:
    if not model_available:
        if os.environ.get("KYRODB_REQUIRE_MODEL"):
            pytest.fail("KYRODB_REQUIRE_MODEL is set but the server has no embedding model")
        pytest.skip("no embedding model (set KYRODB_MODEL_DIR to an installed one)")


_names = iter(range(1_000_000))


@pytest.fixture
def name() -> str:
    """A fresh collection name per test."""
    return f"t{os.getpid()}_{next(_names)}"
