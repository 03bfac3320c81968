"""The LangChain adapter: langchain-tests' standard vector store suite, plus filters, scores, the
hybrid retriever and the server's own embedder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

import kyrodb
from conftest import Server
from kyrodb.langchain import KyroDBHybridRetriever, KyroDBVectorStore

_n = iter(range(1_000_000))


class TestKyroDBStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, server: Server) -> Iterator[VectorStore]:  # type: ignore[override]
        store = KyroDBVectorStore(
            collection=f"lc_std_{next(_n)}",
            embedding=self.get_embeddings(),
            client=kyrodb.Client(server.url),
        )
        try:
            yield store
        finally:
            store.client.drop_collection(store.collection)


def test_filters_scores_and_the_hybrid_retriever(server: Server) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    store = KyroDBVectorStore.from_texts(
        ["kyrodb fuses bm25 and vectors", "postgres with pgvector", "redis caches hot keys",
         "lancedb stores columns"],
        DeterministicFakeEmbedding(size=8),
        metadatas=[{"source": "a", "year": 2024, "nested": {"x": [1, 2]}},
                   {"source": "b", "year": 2023}, {"source": "a", "year": 2022}, {"source": "c"}],
        ids=["k", "p", "r", "l"],
        client=kyrodb.Client(server.url),
        collection=f"lc_extra_{next(_n)}",
        metadata_fields={"source": "keyword", "year": "integer"},
    )
    try:
        # Exact text -> its own vector first; metadata round-trips, nested values included.
        top = store.similarity_search_with_score("kyrodb fuses bm25 and vectors", k=4)
        assert top[0][0] == Document(id="k", page_content="kyrodb fuses bm25 and vectors",
                                     metadata={"source": "a", "year": 2024, "nested": {"x": [1, 2]}})
        assert top[0][1] == pytest.approx(1.0, abs=1e-5)
        assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
        # Filters on declared metadata fields, shorthand and full language.
        got = store.similarity_search("anything", k=10, filter={"source": "a"})
        assert sorted(d.id or "" for d in got) == ["k", "r"]
        got = store.similarity_search("anything", k=10, filter={"must": [
            {"key": "year", "range": {"gte": 2023}}]})
        assert sorted(d.id or "" for d in got) == ["k", "p"]
        rel = store.similarity_search_with_relevance_scores("redis caches hot keys", k=2)
        assert rel[0][0].id == "r" and 0.99 <= rel[0][1] <= 1.0
        # The retriever of the base class and KyroDB's hybrid one.
        assert store.as_retriever(search_kwargs={"k": 1}).invoke("postgres with pgvector")[0].id == "p"
        hybrid = store.as_hybrid_retriever(k=2)
        assert isinstance(hybrid, KyroDBHybridRetriever)
        docs = hybrid.invoke("pgvector")
        assert docs[0].id == "p"  # BM25 finds the word; fused with the vector list
        assert len(hybrid.invoke("pgvector", k=1)) == 1
        assert [d.id for d in store.as_hybrid_retriever(k=5, filter={"source": "a"}).invoke("keys")] \
            in (["r", "k"], ["k", "r"])
        store.delete(None)
        assert store.similarity_search("kyrodb", k=3) == []
    finally:
        store.client.drop_collection(store.collection)


def test_the_servers_embedder_when_no_embedding_is_given(server: Server, needs_model: None) -> None:
    store = KyroDBVectorStore(collection=f"lc_srv_{next(_n)}", client=kyrodb.Client(server.url))
    try:
        store.add_texts(["A man is eating food.", "The stock market fell sharply.",
                         "A cheetah chases its prey."], metadatas=[{"i": 0}, {"i": 1}, {"i": 2}])
        assert store.similarity_search("someone having a meal", k=1)[0].metadata == {"i": 0}
        assert store.as_hybrid_retriever(k=1).invoke("stock prices dropped")[0].metadata == {"i": 1}
        assert store.embeddings is not None
        assert len(store.embeddings.embed_query("x")) == 384
    finally:
        store.client.drop_collection(store.collection)


def test_an_existing_collection_without_the_fields_is_refused(server: Server) -> None:
    c = kyrodb.Client(server.url)
    name = f"lc_other_{next(_n)}"
    c.create_collection(name, {"vectors": {"v": {"dim": 8, "metric": "cosine"}}})
    try:
        from langchain_core.embeddings import DeterministicFakeEmbedding

        with pytest.raises(ValueError, match="text"):
            KyroDBVectorStore(collection=name, embedding=DeterministicFakeEmbedding(size=8), client=c)
    finally:
        c.drop_collection(name)


def test_the_langchain_example_runs(server: Server, needs_model: None) -> None:
    import os
    import subprocess
    import sys

    example = os.path.join(os.path.dirname(__file__), "..", "examples", "langchain_example.py")
    r = subprocess.run([sys.executable, example], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "KYRODB_URL": server.url})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "added 5 texts (embedded by the server)"
    # The durability texts answer the crash question; the filter keeps only the BM25 text; the
    # hybrid retriever ranks the fusion sentence first.
    crash = lines[lines.index("similarity_search('how do writes survive a crash?', k=2):") + 1]
    assert "'durability'" in crash, r.stdout
    assert lines[lines.index("filtered to topic=text:") + 1].strip().startswith("BM25 ranks")
    assert "Reciprocal rank fusion" in lines[lines.index("hybrid retriever (vector + BM25, RRF):") + 1]
