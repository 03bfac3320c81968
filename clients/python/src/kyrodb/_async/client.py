"""The asynchronous client. ``../_sync/client.py`` is generated from this file by
``tools/gen_sync.py`` (unasync): change this one, then regenerate (a test checks they agree)."""

from __future__ import annotations

import asyncio
import json as _json
import os
import random
import ssl
import time as _time
from typing import Any, AsyncIterator, Iterable, Mapping, Sequence
from urllib.parse import quote

import httpx

from .._errors import KyroDBError, TimeoutError, TransportError, error_for
from .._models import (
    JSON,
    CollectionInfo,
    DeleteResult,
    Document,
    Entry,
    KeyspaceInfo,
    Limits,
    ScanPage,
    SearchResult,
    UpsertResult,
    _value_of,
)
from .._request import (
    RETRYABLE_CODES,
    DocumentBatcher,
    backoff_seconds,
    doc_json,
    hybrid_body,
    kv_item,
    kv_params,
    progress_bar,
    retry_after_seconds,
    search_body,
    seg,
)

DEFAULT_URL = "http://127.0.0.1:8080"


class AsyncClient:
    """A KyroDB client over HTTP (httpx). ``kyrodb.Client`` and ``kyrodb.AsyncClient`` have the
    same methods; the async one's are coroutines (and ``scan`` an async iterator).

    ``url`` defaults to ``$KYRODB_URL`` or ``http://127.0.0.1:8080``, ``token`` to
    ``$KYRODB_TOKEN`` (sent as a bearer token), ``timeout`` is per request in seconds. An
    ``https://`` URL is checked against the system's CA certificates plus those in ``ca_file``
    (default ``$KYRODB_CA_FILE``), a PEM file, e.g. the CA that signed the server's certificate. Requests
    answered 429 or 503 ``busy`` are retried up to ``max_retries`` times, waiting what
    ``Retry-After`` says (else exponential backoff from ``backoff`` seconds); a request that could
    not be sent (connection refused) is retried too. Errors raise the ``kyrodb`` exception of the
    server's error code (``kyrodb.CollectionNotFound``, ``kyrodb.ConditionFailed``, ...), each a
    ``kyrodb.KyroDBError`` with ``code``, ``message`` and ``status``.

    Example::

        with kyrodb.Client("http://127.0.0.1:8080") as db:
            db.put(1, b"hello")
            assert db.get(1) == b"hello"

        async with kyrodb.AsyncClient() as db:
            await db.put(1, b"hello")
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff: float = 0.2,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.url = (url or os.environ.get("KYRODB_URL") or DEFAULT_URL).rstrip("/")
        ca_file = ca_file if ca_file is not None else os.environ.get("KYRODB_CA_FILE")
        # The system's roots (not certifi's bundle), plus the given CA file.
        verify = ssl.create_default_context()
        if ca_file:
            verify.load_verify_locations(cafile=ca_file)
        token = token if token is not None else os.environ.get("KYRODB_TOKEN")
        h = {"user-agent": "kyrodb-python/0.1.0"}
        if token:
            h["authorization"] = f"Bearer {token}"
        h.update(headers or {})
        self.max_retries = max_retries
        self.backoff = backoff
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, headers=h, transport=transport, verify=verify
        )
        self._limits: Limits | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()

    # ---- transport ------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response | None:
        """Sends a request, retrying 429/503-busy answers and unsent requests; raises the error's
        class otherwise. With ``missing_ok`` a 404 ``not_found``/``document_not_found`` is None."""
        body = content
        h = dict(headers or {})
        if json is not None:
            body = _json.dumps(json, separators=(",", ":")).encode()
            h["content-type"] = "application/json"
        attempt = 0
        while True:
            try:
                r = await self._http.request(method, path, params=params, content=body, headers=h)
            except httpx.TimeoutException as e:
                if isinstance(e, httpx.ConnectTimeout) and attempt < self.max_retries:
                    attempt += 1
                    await asyncio.sleep(backoff_seconds(self.backoff, attempt, random.random()))
                    continue
                raise TimeoutError(f"{method} {path}: {e!r}") from e
            except httpx.TransportError as e:
                if isinstance(e, httpx.ConnectError) and attempt < self.max_retries:
                    attempt += 1
                    await asyncio.sleep(backoff_seconds(self.backoff, attempt, random.random()))
                    continue
                raise TransportError(f"{method} {path}: {e!r}") from e
            if r.status_code < 300:
                return r
            err = self._error(r)
            if missing_ok and r.status_code == 404 and err.code in ("not_found", "document_not_found"):
                return None
            if err.code in RETRYABLE_CODES and attempt < self.max_retries:
                attempt += 1
                wait = err.retry_after
                if wait is None:
                    wait = backoff_seconds(self.backoff, attempt, random.random())
                await asyncio.sleep(wait)
                continue
            raise err

    @staticmethod
    def _error(r: httpx.Response) -> KyroDBError:
        code, message, body = None, r.text, None
        try:
            body = r.json()
            code = body["error"]["code"]
            message = body["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        return error_for(
            r.status_code, code, message, retry_after_seconds(r.headers.get("retry-after")), body
        )

    async def _json(self, method: str, path: str, **kw: Any) -> JSON:
        r = await self._request(method, path, **kw)
        assert r is not None
        out: JSON = r.json()
        return out

    async def limits(self) -> Limits:
        """The server's request limits (from ``/build_info``; fetched once)."""
        if self._limits is None:
            self._limits = Limits.from_json((await self.build_info())["limits"])
        return self._limits

    # ---- operations -----------------------------------------------------------------------------

    async def health(self) -> bool:
        """True when the server answers ``/health``."""
        return (await self._json("GET", "/health")).get("status") == "ok"

    async def ready(self) -> JSON:
        """``/ready``: ``ready``, ``visible_seq``, ``auto_embed`` (never raises for 503 not-ready)."""
        r = await self._http.get("/ready")
        out: JSON = r.json()
        return out

    async def build_info(self) -> JSON:
        """Version, git sha, limits, CPU features and the embedding model."""
        return await self._json("GET", "/build_info")

    async def metrics(self) -> str:
        """The Prometheus text exposition of ``/metrics``."""
        r = await self._request("GET", "/metrics")
        assert r is not None
        return r.text

    async def openapi(self) -> JSON:
        """The served OpenAPI document."""
        return await self._json("GET", "/openapi.json")

    async def snapshot(self) -> JSON:
        """Compacts the WAL into snapshot files (admin)."""
        return await self._json("POST", "/v1/snapshot")

    async def rmi_build(self) -> JSON:
        """Rebuilds the learned index and reports its leaves and error bound (admin)."""
        return await self._json("POST", "/v1/rmi/build")

    async def warmup(self) -> JSON:
        """Reads the data files into the page cache (admin)."""
        return await self._json("POST", "/v1/warmup")

    async def create_backup(self, to: str) -> JSON:
        """Starts a backup of the node into ``to`` — a directory on the server's machine or
        ``s3://bucket/prefix``, inside the server's ``backup_dirs`` — and returns its status at once
        (``id``, ``state``); follow it with :meth:`backup_status` or :meth:`wait_backup` (admin)."""
        return await self._json("POST", "/v1/backups", json={"to": to})

    async def backup_status(self, backup_id: str) -> JSON:
        """A backup's ``state`` (checkpoint, sending, done, failed), ``seq``, files and bytes
        (admin)."""
        return await self._json("GET", f"/v1/backups/{quote(backup_id, safe='')}")

    async def wait_backup(self, backup_id: str, *, timeout: float = 3600.0) -> JSON:
        """Polls :meth:`backup_status` until the backup is done or failed, and returns its status;
        raises :class:`TimeoutError` after ``timeout`` seconds."""
        deadline = _time.monotonic() + timeout
        while True:
            st = await self.backup_status(backup_id)
            if st["state"] in ("done", "failed"):
                return st
            if _time.monotonic() > deadline:
                raise TimeoutError(f"backup {backup_id} still {st['state']} after {timeout} s")
            await asyncio.sleep(0.2)

    # ---- key-value ------------------------------------------------------------------------------

    async def put(
        self,
        key: int,
        value: bytes | str,
        *,
        keyspace: str | None = None,
        ttl_ms: int | None = None,
        if_absent: bool = False,
        if_seq: int | None = None,
    ) -> int:
        """Writes ``value`` (any bytes; a str is UTF-8) under ``key`` (0..2^64-1); returns the
        write's sequence number once durable. ``if_absent``/``if_seq`` make it conditional
        (``ConditionFailed`` when the condition does not hold; nothing is written).

        >>> db.put(42, b"\\x00\\xff")              # doctest: +SKIP
        7
        """
        data = value.encode() if isinstance(value, str) else bytes(value)
        r = await self._request(
            "PUT",
            f"/v1/kv/{int(key)}",
            params=kv_params(keyspace, ttl_ms=ttl_ms, if_absent=if_absent, if_seq=if_seq),
            content=data,
            headers={"content-type": "application/octet-stream"},
        )
        assert r is not None
        return int(r.json()["offset"])

    async def get(self, key: int, *, keyspace: str | None = None) -> bytes | None:
        """The value of ``key``, or None when it has none.

        >>> db.get(42)                               # doctest: +SKIP
        b'\\x00\\xff'
        """
        e = await self.get_entry(key, keyspace=keyspace)
        return None if e is None else e.value

    async def get_entry(self, key: int, *, keyspace: str | None = None) -> Entry | None:
        """The value of ``key`` with the sequence number it was written at (for ``if_seq``).

        >>> e = db.get_entry(42)                     # doctest: +SKIP
        >>> db.put(42, b"next", if_seq=e.seq)        # compare-and-set
        """
        r = await self._request(
            "GET", f"/v1/kv/{int(key)}", params=kv_params(keyspace), missing_ok=True
        )
        if r is None:
            return None
        return Entry(value=r.content, seq=int(r.headers.get("x-kyrodb-seq", "0")))

    async def delete(
        self, key: int, *, keyspace: str | None = None, if_seq: int | None = None
    ) -> int:
        """Deletes ``key`` (absent keys too); returns the write's sequence number."""
        r = await self._request(
            "DELETE", f"/v1/kv/{int(key)}", params=kv_params(keyspace, if_seq=if_seq)
        )
        assert r is not None
        return int(r.json()["offset"])

    async def batch_get(
        self, keys: Sequence[int], *, keyspace: str | None = None
    ) -> list[bytes | None]:
        """The values of ``keys`` in order (None where absent), in as many requests as the server's
        batch limit needs."""
        lim = await self.limits()
        out: list[bytes | None] = []
        for i in range(0, len(keys), max(1, lim.batch_keys_max)):
            body: JSON = {"keys": [int(k) for k in keys[i : i + lim.batch_keys_max]]}
            if keyspace is not None:
                body["keyspace"] = keyspace
            j = await self._json("POST", "/v1/kv/batch_get", json=body)
            out.extend(_value_of(it) for it in j["items"])
        return out

    async def batch_put(
        self,
        items: Mapping[int, bytes | str] | Iterable[tuple[int, bytes | str]],
        *,
        keyspace: str | None = None,
        ttl_ms: int | None = None,
    ) -> int:
        """Writes many keys; each request is atomic (all or nothing) and sized under the server's
        limits. Returns the last request's sequence number.

        >>> db.batch_put({1: b"a", 2: "b"}, keyspace="sessions", ttl_ms=60_000)   # doctest: +SKIP
        """
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        batcher = DocumentBatcher(await self.limits(), per_item_max=None, keys=True)
        seq = 0
        for chunk in batcher.chunks(kv_item(k, v, keyspace, ttl_ms) for k, v in pairs):
            seq = int((await self._json("POST", "/v1/kv/batch_put", json={"items": chunk}))["offset"])
        return seq

    async def batch_delete(self, keys: Sequence[int], *, keyspace: str | None = None) -> int:
        """Deletes ``keys`` atomically; returns the sequence number."""
        body: JSON = {"keys": [int(k) for k in keys]}
        if keyspace is not None:
            body["keyspace"] = keyspace
        return int((await self._json("POST", "/v1/kv/batch_delete", json=body))["offset"])

    async def delete_range(self, start: int, end: int, *, keyspace: str | None = None) -> int:
        """Deletes every key in ``[start, end)``; returns the sequence number."""
        body: JSON = {"start": int(start), "end": int(end)}
        if keyspace is not None:
            body["keyspace"] = keyspace
        return int((await self._json("POST", "/v1/kv/delete_range", json=body))["offset"])

    async def scan_page(
        self,
        start: int = 0,
        end: int | None = None,
        *,
        limit: int | None = None,
        keyspace: str | None = None,
    ) -> ScanPage:
        """One page of keys in ``[start, end)`` ascending."""
        params: dict[str, Any] = {"start": int(start)}
        if end is not None:
            params["end"] = int(end)
        if limit is not None:
            params["limit"] = int(limit)
        if keyspace is not None:
            params["keyspace"] = keyspace
        return ScanPage.from_json(await self._json("GET", "/v1/scan", params=params))

    async def scan(
        self,
        start: int = 0,
        end: int | None = None,
        *,
        page_size: int | None = None,
        keyspace: str | None = None,
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Every (key, value) in ``[start, end)``, ascending, page by page.

        >>> for key, value in db.scan(0, 100):   # doctest: +SKIP
        ...     print(key, value)
        """
        at: int | None = start
        while at is not None:
            page = await self.scan_page(at, end, limit=page_size, keyspace=keyspace)
            for kv in page.items:
                yield kv
            at = page.next_start

    # ---- keyspaces ------------------------------------------------------------------------------

    async def create_keyspace(self, name: str) -> KeyspaceInfo:
        """Creates keyspace ``name`` (admin; an existing one is returned as it is).

        >>> db.create_keyspace("sessions").keys      # doctest: +SKIP
        0
        """
        return KeyspaceInfo.from_json(
            await self._json("POST", "/v1/keyspaces", json={"name": name})
        )

    async def list_keyspaces(self) -> list[KeyspaceInfo]:
        """Every keyspace with its exact live key count."""
        j = await self._json("GET", "/v1/keyspaces")
        return [KeyspaceInfo.from_json(k) for k in j["keyspaces"]]

    async def keyspace(self, name: str) -> KeyspaceInfo:
        """One keyspace (``NoSuchKeyspace`` when absent)."""
        return KeyspaceInfo.from_json(await self._json("GET", f"/v1/keyspaces/{quote(name, safe='')}"))

    # ---- collections ----------------------------------------------------------------------------

    async def create_collection(self, name: str, schema: Mapping[str, Any]) -> CollectionInfo:
        """Creates collection ``name`` with ``schema`` (idempotent for the same schema;
        ``CollectionExists`` for another one).

        >>> db.create_collection("notes", {"text_fields": ["body"],   # doctest: +SKIP
        ...     "vectors": {"text": {"dim": 384, "metric": "cosine",
        ...                          "embed": {"model": "all-MiniLM-L6-v2", "source": "body"}}}})
        """
        return CollectionInfo.from_json(
            await self._json("PUT", f"/v2/collections/{seg(name)}", json=dict(schema))
        )

    async def list_collections(self) -> list[CollectionInfo]:
        """Every collection with its document count and index state."""
        j = await self._json("GET", "/v2/collections")
        return [CollectionInfo.from_json(c) for c in j["collections"]]

    async def collection_info(self, name: str) -> CollectionInfo:
        """Schema, live document count, index state, learned-ranking state, re-embed job."""
        return CollectionInfo.from_json(await self._json("GET", f"/v2/collections/{seg(name)}"))

    async def drop_collection(self, name: str) -> None:
        """Drops collection ``name`` and all its documents."""
        await self._request("DELETE", f"/v2/collections/{seg(name)}")

    async def upsert(
        self,
        collection: str,
        documents: Iterable[Document | Mapping[str, Any]],
        *,
        batch_size: int | None = None,
        batch_bytes: int | None = None,
        progress: bool = False,
        auto_embed: bool | None = None,
    ) -> UpsertResult:
        """Writes documents, in batches sized under the server's limits (at most ``batch_size``
        documents and ``batch_bytes`` bytes each; each batch atomic, durable and searchable when
        its request returns). ``progress=True`` shows a tqdm bar. ``auto_embed=True`` asks the
        server to compute each document's embedded vectors.

        A single document over the server's body limit raises ``BodyTooLarge`` before anything of
        its batch is sent; earlier batches stay written.
        """
        docs = (doc_json(d, auto_embed) for d in documents)
        batcher = DocumentBatcher(
            await self.limits(), per_item_max=batch_size, bytes_max=batch_bytes
        )
        bar = progress_bar(progress, documents, "upsert")
        total, seq, requests = 0, 0, 0
        try:
            for chunk in batcher.chunks(docs):
                j = await self._json(
                    "POST", f"/v2/collections/{seg(collection)}/documents", json={"documents": chunk}
                )
                total += int(j["upserted"])
                seq = int(j["seq"])
                requests += 1
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return UpsertResult(upserted=total, seq=seq, requests=requests)

    async def stream(self, collection: str, document: Document | Mapping[str, Any]) -> int:
        """Writes one document through ``/v2/documents/stream``; returns its sequence number."""
        body = {"collection": collection, **doc_json(document, None)}
        return int((await self._json("POST", "/v2/documents/stream", json=body))["seq"])

    async def get_document(self, collection: str, id: str) -> Document | None:
        """The stored document ``id`` (text, fields and vectors), or None.

        >>> db.get_document("news", "doc-17").fields   # doctest: +SKIP
        {'author': 'ann', 'rank': 3}
        """
        r = await self._request(
            "GET", f"/v2/collections/{seg(collection)}/documents/{seg(id)}", missing_ok=True
        )
        return None if r is None else Document.from_json(r.json())

    async def delete_documents(
        self,
        collection: str,
        ids: Sequence[str] | None = None,
        *,
        filter: Mapping[str, Any] | None = None,
    ) -> DeleteResult:
        """Deletes documents by id, or every document matching ``filter``.

        >>> db.delete_documents("news", ["doc-17", "gone"])        # doctest: +SKIP
        DeleteResult(deleted=1, absent=1)
        >>> db.delete_documents("news", filter={"author": "ann"})  # doctest: +SKIP
        """
        body: JSON = {}
        if ids is not None:
            body["ids"] = list(ids)
        if filter is not None:
            body["filter"] = dict(filter)
        return DeleteResult.from_json(
            await self._json(
                "POST", f"/v2/collections/{seg(collection)}/documents/delete", json=body
            )
        )

    async def search(
        self,
        collection: str,
        vector: Sequence[float] | None = None,
        *,
        text: str | None = None,
        using: str | None = None,
        filter: Mapping[str, Any] | None = None,
        limit: int = 10,
        ef: int | None = None,
        threshold: float | None = None,
        with_: Sequence[str] = ("fields",),
        explain: bool = False,
        exact: bool = False,
    ) -> SearchResult:
        """Filtered vector search: by ``vector``, or by ``text`` embedded with the field's model.

        >>> db.search("notes", text="someone having a meal", limit=3).ids   # doctest: +SKIP
        ['n1', ...]
        """
        body = search_body(
            vector, text, using, filter, limit, ef, threshold, with_, explain, exact
        )
        return SearchResult.from_json(
            await self._json("POST", f"/v2/collections/{seg(collection)}/search", json=body)
        )

    async def hybrid_search(
        self,
        collection: str,
        *,
        vector: Sequence[float] | None = None,
        vector_text: str | None = None,
        using: str | None = None,
        vector_threshold: float | None = None,
        vectors: Sequence[Mapping[str, Any]] | None = None,
        text: str | Mapping[str, Any] | None = None,
        filter: Mapping[str, Any] | None = None,
        time_range: Mapping[str, Any] | None = None,
        fusion: str | Mapping[str, Any] = "rrf",
        limit: int = 10,
        candidates: int | None = None,
        with_: Sequence[str] = ("fields",),
        explain: bool = False,
        exact: bool = False,
    ) -> SearchResult:
        """One request fusing vector similarity, BM25 full text, a metadata filter and a time range.

        ``vector`` (or ``vector_text``, embedded by the server) with ``using`` is one vector
        component; ``vectors`` several (``[{"embedding": [...], "using": "image", "weight": 0.5}]``).
        ``text`` is the BM25 query (quoted phrases must match) or ``{"query": ..., "fields":
        {"title": 2.0}}``. ``fusion``: ``"rrf"``, ``"weighted"``, ``"dbsf"``, ``"learned_ranking"``
        or ``{"strategy": "rrf", "k": 60}``.

        >>> db.hybrid_search("news", vector_text="gpu kernels", text="cuda",   # doctest: +SKIP
        ...                  filter={"lang": "en"}, time_range={"last": "30d"}, explain=True)
        """
        body = hybrid_body(
            collection,
            vector,
            vector_text,
            using,
            vector_threshold,
            vectors,
            text,
            filter,
            time_range,
            fusion,
            limit,
            candidates,
            with_,
            explain,
            exact,
        )
        return SearchResult.from_json(await self._json("POST", "/v2/search/hybrid", json=body))

    async def query(self, collection: str, **params: str | int | float | bool) -> SearchResult:
        """The GET form: ``q``, ``similar_to``, ``vector_sim``, ``auto_rank``, ``limit``, ``using``;
        any other parameter is an equality filter on the field of that name.

        >>> db.query("news", q="neural networks", author="ann", limit=5).ids   # doctest: +SKIP
        """
        p: dict[str, Any] = {"collection": collection}
        for k, v in params.items():
            p[k] = str(v).lower() if isinstance(v, bool) else v
        return SearchResult.from_json(await self._json("GET", "/v2/search", params=p))

    async def feedback(
        self,
        collection: str,
        query: Mapping[str, Any] | str,
        *,
        relevant: Sequence[str] = (),
        labels: Mapping[str, int] | None = None,
        shown: Sequence[str] | None = None,
    ) -> JSON:
        """Records which results of ``query`` (a hybrid search body or its text) were relevant;
        the learned ranking trains on it.

        >>> db.feedback("news", {"text_search": "cuda"}, relevant=["doc-3"],   # doctest: +SKIP
        ...             shown=["doc-1", "doc-2", "doc-3"])
        """
        body: JSON = {"query": query if isinstance(query, str) else dict(query)}
        if relevant:
            body["relevant"] = list(relevant)
        if labels is not None:
            body["labels"] = dict(labels)
        if shown is not None:
            body["shown"] = list(shown)
        return await self._json("POST", f"/v2/collections/{seg(collection)}/feedback", json=body)

    async def reembed(self, collection: str, field: str, embed: Mapping[str, Any]) -> JSON:
        """Switches vector field ``field`` to ``embed`` (``{"model": ..., "source": ...}``) and
        recomputes its vectors in a background job (admin); returns the job."""
        body = {"field": field, "embed": dict(embed)}
        return await self._json("POST", f"/v2/collections/{seg(collection)}/reembed", json=body)

    # ---- embeddings -----------------------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for ``texts`` from the server's model (batched by 256).

        >>> len(db.embed(["hello"])[0])              # doctest: +SKIP
        384
        """
        out: list[list[float]] = []
        for i in range(0, len(texts), 256):
            j = await self._json("POST", "/v2/embed", json={"texts": list(texts[i : i + 256])})
            out.extend(j["vectors"])
        return out

    async def models(self) -> list[JSON]:
        """Every model the server knows, installed or not, with its files' hashes."""
        return list((await self._json("GET", "/v2/models"))["models"])

