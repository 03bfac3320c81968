"""LangChain integration: :class:`KyroDBVectorStore` (a ``langchain_core`` ``VectorStore``),
:class:`KyroDBHybridRetriever` (vector + BM25 + filters + time range fused by KyroDB in one
request) and :class:`KyroDBEmbeddings` (the server's own embedding model).

Needs ``pip install 'kyrodb[langchain]'``.

    >>> from kyrodb.langchain import KyroDBVectorStore                    # doctest: +SKIP
    >>> store = KyroDBVectorStore(collection="notes")   # the server embeds (all-MiniLM-L6-v2)
    >>> store.add_texts(["KyroDB fuses BM25 and vectors"], metadatas=[{"source": "readme"}])
    >>> store.similarity_search("hybrid search", k=1)
    >>> store.as_hybrid_retriever(k=5).invoke("bm25 fusion")

How documents are stored: the page content in the text field ``text_field`` (BM25-indexed), the
metadata as JSON in the text field ``_metadata`` (so any metadata round-trips exactly), and the
metadata keys named in ``metadata_fields`` also as typed fields, so that they can be filtered on
(``filter={"source": "readme"}`` or any KyroDB filter).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Iterable, Mapping, Sequence

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore

from ._errors import CollectionExists, CollectionNotFound
from ._models import Hit
from ._sync.client import Client

#: The text field holding each document's metadata as JSON.
METADATA_FIELD = "_metadata"
#: The model the server embeds with when no LangChain embedding is given.
SERVER_MODEL = "all-MiniLM-L6-v2"
SERVER_MODEL_DIM = 384


class KyroDBEmbeddings(Embeddings):
    """LangChain embeddings computed by the KyroDB server's model (all-MiniLM-L6-v2, 384
    dimensions, L2-normalised)."""

    def __init__(self, client: Client | None = None, **client_kwargs: Any) -> None:
        self.client = client or Client(**client_kwargs)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.client.embed(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.client.embed([text])[0]


class KyroDBVectorStore(VectorStore):
    """A LangChain vector store on a KyroDB collection.

    Args:
        collection: the collection's name (created when absent; an existing one is used if it has
            ``text_field``, ``_metadata`` and ``vector_field``).
        embedding: a LangChain ``Embeddings``; None (default) lets the server embed documents and
            queries with its own model (``auto_embed``), so no vectors cross the network.
        client: a :class:`kyrodb.Client` (else one is made from ``url``/``token``/env).
        metadata_fields: metadata keys to index as typed fields for filtering, e.g.
            ``{"source": "keyword", "year": "integer", "published": "datetime"}``.
        timestamp_field: one of ``metadata_fields`` of type datetime that time ranges use.
        metric: ``cosine`` (default), ``dot`` or ``l2``.
        dim: the embedding's dimension (else found by embedding one probe text).
    """

    def __init__(
        self,
        collection: str = "langchain",
        embedding: Embeddings | None = None,
        *,
        client: Client | None = None,
        url: str | None = None,
        token: str | None = None,
        text_field: str = "text",
        vector_field: str = "embedding",
        metadata_fields: Mapping[str, str] | None = None,
        timestamp_field: str | None = None,
        metric: str = "cosine",
        dim: int | None = None,
    ) -> None:
        self.client = client or Client(url, token=token)
        self.collection = collection
        self._embedding = embedding
        self.text_field = text_field
        self.vector_field = vector_field
        self.metadata_fields = dict(metadata_fields or {})
        self.timestamp_field = timestamp_field
        self.metric = metric
        if embedding is None:
            self.dim = SERVER_MODEL_DIM
        else:
            self.dim = dim or len(embedding.embed_query("dimension probe"))
        self._ensure_collection()

    # ---- schema ---------------------------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        """The collection schema this store creates."""
        vec: dict[str, Any] = {"dim": self.dim, "metric": self.metric}
        if self._embedding is None:
            vec["embed"] = {"model": SERVER_MODEL, "source": self.text_field}
        s: dict[str, Any] = {
            "text_fields": [self.text_field, METADATA_FIELD],
            "vectors": {self.vector_field: vec},
        }
        if self.metadata_fields:
            s["fields"] = dict(self.metadata_fields)
        if self.timestamp_field:
            s["timestamp_field"] = self.timestamp_field
        return s

    def _ensure_collection(self) -> None:
        try:
            self.client.create_collection(self.collection, self.schema())
        except CollectionExists:
            have = self.client.collection_info(self.collection).schema
            missing = [
                f for f in (self.text_field, METADATA_FIELD) if f not in have.get("text_fields", [])
            ]
            if self.vector_field not in have.get("vectors", {}):
                missing.append(self.vector_field)
            if missing:
                raise ValueError(
                    f"collection {self.collection!r} exists without the fields {missing} this store "
                    f"needs; use another collection or text_field/vector_field"
                ) from None

    @property
    def embeddings(self) -> Embeddings | None:
        return self._embedding or KyroDBEmbeddings(self.client)

    # ---- writes ---------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        progress: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """Upserts texts with their metadata (same id = replaced); returns the ids. Batched under
        the server's limits; each batch is durable and searchable when it returns."""
        texts = list(texts)
        metas = metadatas or [{} for _ in texts]
        if len(metas) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(metas)} metadatas")
        given = list(ids) if ids is not None else [None] * len(texts)
        if len(given) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(given)} ids")
        out = [i if i else str(uuid.uuid4()) for i in given]
        vectors = self._embedding.embed_documents(texts) if self._embedding else None
        docs = []
        for n, (t, m, i) in enumerate(zip(texts, metas, out)):
            d: dict[str, Any] = {
                "id": i,
                "text": {self.text_field: t, METADATA_FIELD: json.dumps(m, sort_keys=True)},
            }
            fields = {k: m[k] for k in self.metadata_fields if m.get(k) is not None}
            if fields:
                d["fields"] = fields
            if vectors is not None:
                d["vectors"] = {self.vector_field: [float(x) for x in vectors[n]]}
            else:
                d["auto_embed"] = True
            docs.append(d)
        self.client.upsert(self.collection, docs, progress=progress)
        return out

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Upserts LangChain documents (their ``id`` is kept; missing ids are generated)."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [d.id for d in documents]
        return self.add_texts(
            [d.page_content for d in documents],
            [dict(d.metadata) for d in documents],
            ids=[i or str(uuid.uuid4()) for i in ids],
            **kwargs,
        )

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Deletes documents by id (absent ids are fine); ``ids=None`` deletes every document
        (drops and re-creates the collection)."""
        if ids is None:
            self.client.drop_collection(self.collection)
            self._ensure_collection()
            return True
        for i in range(0, len(ids), 1000):
            self.client.delete_documents(self.collection, ids[i : i + 1000])
        return True

    # ---- reads ----------------------------------------------------------------------------------

    def _document(self, text: Mapping[str, str] | None, id: str) -> Document:
        text = text or {}
        meta = json.loads(text.get(METADATA_FIELD) or "{}")
        return Document(id=id, page_content=text.get(self.text_field, ""), metadata=meta)

    def _hit(self, h: Hit) -> tuple[Document, float]:
        return self._document(h.text, h.id), h.score

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents among ``ids`` (absent ones are skipped)."""
        out = []
        for i in ids:
            d = self.client.get_document(self.collection, i)
            if d is not None:
                out.append(self._document(d.text, d.id))
        return out

    def _search(
        self, query: str | None, vector: list[float] | None, k: int, filter: Any
    ) -> list[tuple[Document, float]]:
        if vector is None and query is not None and self._embedding is not None:
            vector = self._embedding.embed_query(query)
        try:
            res = self.client.search(
                self.collection,
                vector,
                text=None if vector is not None else query,
                using=self.vector_field,
                filter=filter,
                limit=k,
                with_=["text"],
            )
        except CollectionNotFound:
            return []
        return [self._hit(h) for h in res.hits]

    def similarity_search(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents most similar to ``query`` among those matching ``filter`` (KyroDB's
        filter language over ``metadata_fields``; ``{"source": "a"}`` is equality)."""
        return [d for d, _ in self._search(query, None, k, filter)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search`, with KyroDB's score (cosine similarity, dot product or
        negative L2 distance: higher is more similar)."""
        return self._search(query, None, k, filter)

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        return [d for d, _ in self._search(None, list(embedding), k, filter)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.metric == "l2":
            return lambda s: 1.0 / (1.0 + max(0.0, -s))
        # cosine (and dot on normalised vectors): similarity in [-1, 1] -> [0, 1]
        return lambda s: (1.0 + max(-1.0, min(1.0, s))) / 2.0

    def hybrid_search(
        self,
        query: str,
        k: int = 4,
        *,
        filter: Mapping[str, Any] | None = None,
        time_range: Mapping[str, Any] | None = None,
        fusion: str | Mapping[str, Any] = "rrf",
        candidates: int | None = None,
    ) -> list[tuple[Document, float]]:
        """Vector similarity and BM25 over the page content, filtered and time-ranged, fused by
        KyroDB in one request; (document, fused score) best first."""
        vector = self._embedding.embed_query(query) if self._embedding is not None else None
        res = self.client.hybrid_search(
            self.collection,
            vector=vector,
            vector_text=None if vector is not None else query,
            using=self.vector_field,
            text={"query": query, "fields": {self.text_field: 1.0}},
            filter=filter,
            time_range=time_range,
            fusion=fusion,
            limit=k,
            candidates=candidates,
            with_=["text"],
        )
        return [self._hit(h) for h in res.hits]

    def as_hybrid_retriever(self, **kwargs: Any) -> KyroDBHybridRetriever:
        """A retriever running :meth:`hybrid_search` (``k``, ``filter``, ``time_range``,
        ``fusion``, ``candidates``)."""
        return KyroDBHybridRetriever(store=self, **kwargs)

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> KyroDBVectorStore:
        """A store (``kwargs``: the constructor's) holding ``texts``."""
        store = cls(embedding=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


class KyroDBHybridRetriever(BaseRetriever):
    """Retrieves with KyroDB's hybrid search: the query's vector (the store's embedding, or the
    server's model) and its BM25 match fused (RRF by default) under an optional filter and time
    range, in one request."""

    store: KyroDBVectorStore
    k: int = 4
    filter: dict[str, Any] | None = None
    time_range: dict[str, Any] | None = None
    fusion: str | dict[str, Any] = "rrf"
    candidates: int | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        hits = self.store.hybrid_search(
            query,
            int(kwargs.get("k", self.k)),
            filter=kwargs.get("filter", self.filter),
            time_range=kwargs.get("time_range", self.time_range),
            fusion=kwargs.get("fusion", self.fusion),
            candidates=kwargs.get("candidates", self.candidates),
        )
        return [d for d, _ in hits]
