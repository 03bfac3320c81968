"""The sync client against a real server: every route group, typed results, errors by code,
chunking, retries."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import httpx
import pytest

import kyrodb
from kyrodb import Client
from kyrodb._request import DocumentBatcher

from conftest import Server, start

SCHEMA = {
    "vectors": {"v": {"dim": 4, "metric": "cosine"}},
    "text_fields": ["title", "body"],
    "fields": {"lang": "keyword", "n": "integer", "at": "datetime"},
    "timestamp_field": "at",
}


@pytest.fixture
def db(server: Server) -> Client:
    with Client(server.url, timeout=60) as c:
        yield c  # type: ignore[misc]


def test_kv_is_binary_safe_and_conditional(db: Client) -> None:
    every_byte = bytes(range(256)) * 3
    seq = db.put(10, every_byte)
    assert db.get(10) == every_byte
    e = db.get_entry(10)
    assert e is not None and e.value == every_byte and e.seq == seq
    assert db.get(11) is None and db.get_entry(11) is None
    # Compare-and-set: the right seq writes, a stale one is refused and writes nothing.
    seq2 = db.put(10, "second", if_seq=seq)
    with pytest.raises(kyrodb.ConditionFailed) as ei:
        db.put(10, "third", if_seq=seq)
    assert ei.value.status == 409 and ei.value.code == "condition_failed" and ei.value.message
    assert db.get(10) == b"second"
    with pytest.raises(kyrodb.ConflictError):
        db.put(10, "x", if_absent=True)
    assert db.delete(10) > seq2
    assert db.get(10) is None
    # Keys are u64: 2^64-1 works, a negative one is a 4xx naming the key.
    db.put(2**64 - 1, b"max")
    assert db.get(2**64 - 1) == b"max"
    with pytest.raises(kyrodb.BadRequestError):
        db.put(-1, b"x")


def test_batches_scan_and_ranges(db: Client) -> None:
    items = {1000 + i: (bytes([i % 256, 0, 255]) if i % 2 else f"v{i}") for i in range(2500)}
    db.batch_put(items)
    got = db.batch_get([1000, 1001, 999_999, 3499])
    assert got == [b"v0", bytes([1, 0, 255]), None, bytes([2499 % 256, 0, 255])]
    # 2500 keys need several batch_get requests under the server's batch limit.
    assert db.batch_get(list(items)) == [v.encode() if isinstance(v, str) else v for v in items.values()]
    scanned = list(db.scan(1000, 3500, page_size=333))
    assert [k for k, _ in scanned] == list(items)
    page = db.scan_page(1000, 3500, limit=10)
    assert len(page.items) == 10 and page.next_start == 1010
    db.delete_range(1000, 2000)
    db.batch_delete([2000, 2001])
    assert [k for k, _ in db.scan(1000, 3500)] == list(range(2002, 3500))


def test_keyspaces(db: Client) -> None:
    ks = db.create_keyspace("sessions")
    assert ks.name == "sessions"
    db.put(1, b"in ks", keyspace="sessions", ttl_ms=600_000)
    assert db.get(1, keyspace="sessions") == b"in ks"
    assert db.get(1) != b"in ks"
    assert db.keyspace("sessions").keys == 1
    assert "sessions" in [k.name for k in db.list_keyspaces()]
    with pytest.raises(kyrodb.NoSuchKeyspace) as ei:
        db.keyspace("nope")
    assert ei.value.status == 404 and "nope" in ei.value.message


def test_admin_and_ops(db: Client) -> None:
    assert db.health()
    assert db.ready()["ready"] is True
    info = db.build_info()
    assert info["limits"]["body_bytes_max"] > 0
    assert db.limits().documents_per_batch_max > 0
    assert "kyrodb_" in db.metrics()
    assert "/v2/search/hybrid" in db.openapi()["paths"]
    seq = db.put(5, b"x")
    assert db.snapshot()["covered_seq"] >= seq
    assert isinstance(db.rmi_build(), dict)
    assert isinstance(db.warmup(), dict)
    # The test server allows no backup directory; an unknown backup is 404.
    with pytest.raises(kyrodb.BackupDirNotAllowed) as be:
        db.create_backup("/tmp/kyrodb-sdk-backup")
    assert be.value.status == 403
    with pytest.raises(kyrodb.InvalidBackupTarget):
        db.create_backup("relative/dir")
    with pytest.raises(kyrodb.NoSuchBackup):
        db.backup_status("20250101T000000.000Z")


def docs(n: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {
            "id": f"doc/{i} ü",
            "text": {"title": f"report {i}", "body": f"weekly numbers for region {i % 7}"},
            "fields": {"lang": "en" if i % 2 else "de", "n": i},
            "timestamp": 1_700_000_000_000 + i * 60_000,
            "vectors": {"v": [random.Random(i).random() + 0.01 for _ in range(1)]
                        + [random.Random(i * 7 + j).random() + 0.01 for j in range(3)]},
        }
        for i in range(start, start + n)
    ]


def test_collections_documents_and_search(db: Client, name: str) -> None:
    info = db.create_collection(name, SCHEMA)
    assert info.name == name and info.documents == 0 and "v" in info.indexes
    # Same schema again: fine; another schema: CollectionExists.
    db.create_collection(name, SCHEMA)
    with pytest.raises(kyrodb.CollectionExists):
        db.create_collection(name, {**SCHEMA, "text_fields": ["title"]})
    # 3,000 documents in batches cut by bytes (a small cap forces many requests).
    res = db.upsert(name, docs(3000), batch_bytes=64 * 1024, progress=True)
    assert res.upserted == 3000 and res.requests > 5 and res.seq > 0
    assert db.collection_info(name).documents == 3000
    assert name in [c.name for c in db.list_collections()]
    d = db.get_document(name, "doc/7 ü")
    assert d is not None and d.fields["n"] == 7 and d.text["title"] == "report 7"
    assert len(d.vectors["v"]) == 4
    assert db.get_document(name, "nope") is None
    # Vector search with a filter: every hit passes it.
    q = docs(1, start=43)[0]["vectors"]["v"]  # type: ignore[index]
    r = db.search(name, q, filter={"lang": "en"}, limit=5, explain=True)
    assert r.hits and r.hits[0].id == "doc/43 ü" and r.plan is not None
    assert all(h.fields and h.fields["lang"] == "en" for h in r.hits)
    # Hybrid: vector + BM25 + filter + time range, explain shows components.
    h = db.hybrid_search(
        name,
        vector=q,
        using="v",
        text="report 43",
        filter={"lang": "en"},
        time_range={"from": 1_700_000_000_000},
        explain=True,
    )
    assert h.hits[0].id == "doc/43 ü"
    assert h.hits[0].components and "text" in h.hits[0].components
    # The GET form: q plus an equality filter.
    g = db.query(name, q="report 45", lang="en", limit=3)
    assert g.ids[0] == "doc/45 ü"
    # Deletes: by id and by filter.
    assert db.delete_documents(name, ["doc/1 ü", "missing"]) == kyrodb.DeleteResult(1, 1)
    gone = db.delete_documents(name, filter={"lang": "de"})
    assert gone.deleted == 1500
    assert db.collection_info(name).documents == 1499
    # Feedback is recorded.
    fb = db.feedback(name, {"text_search": "report 43"}, relevant=["doc/43 ü", "nope"])
    assert fb["examples"] == 1 and fb["ignored_ids"] == ["nope"], fb
    assert db.collection_info(name).raw["learned_ranking"]["examples"] == 1
    # Bad input: 4xx naming the field, nothing written.
    with pytest.raises(kyrodb.BadRequestError) as ei:
        db.upsert(name, [{"id": "bad", "vectors": {"v": [1, 2, 3]}}])
    assert "v" in ei.value.message and ei.value.status == 400
    assert db.get_document(name, "bad") is None
    db.drop_collection(name)
    with pytest.raises(kyrodb.CollectionNotFound) as e2:
        db.collection_info(name)
    assert e2.value.code == "collection_not_found" and name in str(e2.value)


def test_stream_write(db: Client, name: str) -> None:
    db.create_collection(name, SCHEMA)
    seq = db.stream(name, kyrodb.Document(id="s1", vectors={"v": [1, 0, 0, 0]}, fields={"n": 1}))
    assert seq > 0
    assert db.search(name, [1, 0, 0, 0], limit=1).ids == ["s1"]


def test_a_document_over_the_body_limit_is_refused_before_sending(db: Client) -> None:
    lim = db.limits()
    huge = {"id": "huge", "text": {"body": "x" * lim.body_bytes_max}}
    with pytest.raises(kyrodb.BodyTooLarge) as ei:
        db.upsert("whatever", [huge])
    assert "huge" in ei.value.message


def test_batcher_respects_count_and_bytes() -> None:
    lim = kyrodb.Limits(body_bytes_max=16_000, batch_keys_max=100, documents_per_batch_max=50, raw={})
    b = DocumentBatcher(lim, per_item_max=None)
    items = [{"id": str(i), "text": "y" * (i % 700)} for i in range(1000)]
    chunks = list(b.chunks(items))
    assert sum(len(c) for c in chunks) == 1000
    assert [x for c in chunks for x in c] == items
    import json

    for c in chunks:
        assert len(c) <= 50
        assert len(json.dumps({"documents": c})) <= 16_000


def test_errors_carry_code_message_and_status(auth_server: Server) -> None:
    with Client(auth_server.url, token="") as anon:
        with pytest.raises(kyrodb.Unauthorized) as ei:
            anon.put(1, b"x")
        assert ei.value.status == 401
    with Client(auth_server.url, token="sdk-read-token") as reader:
        with pytest.raises(kyrodb.Forbidden):
            reader.put(1, b"x")
        assert reader.get(1) is None
    with Client(auth_server.url, token="sdk-write-token") as writer:
        writer.put(1, b"x")
        with pytest.raises(kyrodb.PermissionDeniedError):
            writer.create_collection("c", SCHEMA)
    os.environ["KYRODB_TOKEN"] = "sdk-admin-token"
    try:
        with Client(auth_server.url) as admin:  # token from the environment
            admin.create_collection("c", SCHEMA)
    finally:
        del os.environ["KYRODB_TOKEN"]


def test_unknown_codes_fall_back_to_the_status_class() -> None:
    e = kyrodb.BY_CODE.get("collection_not_found")
    assert e is kyrodb.CollectionNotFound
    from kyrodb._errors import error_for

    assert isinstance(error_for(409, "brand_new_code", "m", None, None), kyrodb.ConflictError)
    assert isinstance(error_for(502, None, "m", None, None), kyrodb.ServerError)


def test_busy_and_rate_limited_are_retried_honouring_retry_after() -> None:
    calls: list[float] = []

    def handler(req: httpx.Request) -> httpx.Response:
        import time

        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, headers={"retry-after": "0.3"},
                                  json={"error": {"code": "rate_limited", "message": "slow down"}})
        if len(calls) == 2:
            return httpx.Response(503, headers={"retry-after": "0"},
                                  json={"error": {"code": "busy", "message": "busy"}})
        return httpx.Response(200, json={"offset": 9})

    with Client("http://kyrodb.invalid", transport=httpx.MockTransport(handler)) as c:
        assert c.put(1, b"x") == 9
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.29, "waited what Retry-After said"

    def always_busy(req: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"retry-after": "0"},
                              json={"error": {"code": "busy", "message": "queue full"}})

    with Client("http://kyrodb.invalid", transport=httpx.MockTransport(always_busy), max_retries=2) as c:
        with pytest.raises(kyrodb.Busy) as ei:
            c.put(1, b"x")
    assert ei.value.message == "queue full" and ei.value.retry_after == 0


def test_real_rate_limit_is_absorbed_by_retries(workdir: str) -> None:
    s = start(os.path.join(workdir, "limited"),
              {"KYRODB_RATE_LIMIT_PER_SEC": "20", "KYRODB_RATE_LIMIT_BURST": "5"})
    try:
        with Client(s.url, max_retries=50) as c:
            for i in range(40):
                c.put(i, str(i))
            assert c.batch_get(list(range(40))) == [str(i).encode() for i in range(40)]
            assert 'code="rate_limited"' in c.metrics() or "429" in c.metrics()
    finally:
        s.stop()


def test_connection_refused_is_a_transport_error() -> None:
    with Client("http://127.0.0.1:9", max_retries=1, backoff=0.01) as c:
        with pytest.raises(kyrodb.TransportError):
            c.get(1)


def test_embeddings_and_models(db: Client, name: str, needs_model: None) -> None:
    v = db.embed(["hello", ""])
    assert len(v) == 2 and len(v[0]) == 384
    assert abs(sum(x * x for x in v[0]) - 1) < 1e-3
    assert any(m.get("installed") for m in db.models())
    db.create_collection(name, {
        "text_fields": ["body"],
        "vectors": {"text": {"dim": 384, "metric": "cosine",
                             "embed": {"model": "all-MiniLM-L6-v2", "source": "body"}}}})
    db.upsert(name, [{"id": "n1", "text": "A man is eating food."},
                     {"id": "n2", "text": "The stock market fell sharply."}], auto_embed=True)
    assert db.search(name, text="someone having a meal", using="text", limit=1).ids == ["n1"]
    h = db.hybrid_search(name, vector_text="a person eats", using="text", text="food")
    assert h.ids[0] == "n1"
    job = db.reembed(name, "text", {"model": "all-MiniLM-L6-v2", "source": "body"})
    assert db.collection_info(name).raw["reembed"] is not None, job


def test_the_sync_client_is_generated_from_the_async_one() -> None:
    tool = os.path.join(os.path.dirname(__file__), "..", "tools", "gen_sync.py")
    r = subprocess.run([sys.executable, tool, "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def test_https_with_a_ca_file_and_refused_without_it(workdir: str) -> None:
    d = os.path.join(workdir, "tls-certs")
    os.makedirs(d, exist_ok=True)
    ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca-key.pem")
    cert, key, csr = (os.path.join(d, n) for n in ("server.pem", "server-key.pem", "server.csr"))
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=sdk test CA")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", ext)
    s = start(os.path.join(workdir, "tls"), {"KYRODB_TLS_CERT": cert, "KYRODB_TLS_KEY": key})
    try:
        assert s.url.startswith("https://")
        with Client(s.url, ca_file=ca) as db:
            db.put(1, b"over tls")
            assert db.get(1) == b"over tls"
        # The CA from the environment, as KYRODB_CA_FILE.
        os.environ["KYRODB_CA_FILE"] = ca
        try:
            with Client(s.url) as db:
                assert db.get(1) == b"over tls"
        finally:
            del os.environ["KYRODB_CA_FILE"]
        # Without the CA the server's certificate is not trusted.
        with Client(s.url, max_retries=0) as db:
            with pytest.raises(kyrodb.TransportError, match="(?i)certificate"):
                db.get(1)
    finally:
        s.stop()
