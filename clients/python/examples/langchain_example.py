"""LangChain on KyroDB: a vector store whose embeddings the server computes, a similarity search
with a metadata filter, and KyroDB's hybrid retriever (vector + BM25 fused in one request).

    pip install './clients/python[langchain]'
    python clients/python/examples/langchain_example.py      # server at $KYRODB_URL or :8080
"""

from __future__ import annotations

import kyrodb
from kyrodb.langchain import KyroDBVectorStore

TEXTS = [
    ("KyroDB acknowledges a write only after its WAL record is fsynced.", {"topic": "durability"}),
    ("Group commit lets many writers share one fsync.", {"topic": "durability"}),
    ("HNSW graphs answer approximate nearest-neighbour queries.", {"topic": "vectors"}),
    ("BM25 ranks documents by term frequency and inverse document frequency.", {"topic": "text"}),
    ("Reciprocal rank fusion combines ranked lists without calibrating their scores.", {"topic": "fusion"}),
]


def main() -> None:
    client = kyrodb.Client()
    store = KyroDBVectorStore(collection="langchain_example", client=client,
                              metadata_fields={"topic": "keyword"})
    try:
        ids = store.add_texts([t for t, _ in TEXTS], metadatas=[m for _, m in TEXTS])
        print(f"added {len(ids)} texts (embedded by the server)")

        print("\nsimilarity_search('how do writes survive a crash?', k=2):")
        for doc, score in store.similarity_search_with_score("how do writes survive a crash?", k=2):
            print(f"  {score:.3f}  {doc.page_content}  {doc.metadata}")

        print("\nfiltered to topic=text:")
        for doc in store.similarity_search("ranking", k=2, filter={"topic": "text"}):
            print(f"  {doc.page_content}")

        print("\nhybrid retriever (vector + BM25, RRF):")
        for doc in store.as_hybrid_retriever(k=2).invoke("rank fusion of lists"):
            print(f"  {doc.page_content}")
    finally:
        client.drop_collection("langchain_example")


if __name__ == "__main__":
    main()
