"""The async client against a real server."""

from __future__ import annotations

import asyncio

import pytest

import kyrodb
from conftest import Server


async def test_async_client_covers_kv_collections_and_hybrid(server: Server, name: str) -> None:
    async with kyrodb.AsyncClient(server.url) as db:
        seqs = await asyncio.gather(*(db.put(50_000 + i, bytes([i])) for i in range(50)))
        assert len(set(seqs)) == 50
        assert await db.get(50_007) == bytes([7])
        assert [k async for k, _ in db.scan(50_000, 50_050, page_size=7)] == list(range(50_000, 50_050))
        await db.create_collection(name, {"vectors": {"v": {"dim": 2, "metric": "cosine"}},
                                          "text_fields": ["body"]})
        res = await db.upsert(name, [{"id": f"a{i}", "text": f"alpha {i}", "vector": [1, i / 100]}
                                     for i in range(100)], batch_size=30)
        assert res.upserted == 100 and res.requests == 4
        h = await db.hybrid_search(name, vector=[1, 0], using="v", text="alpha 5", limit=3)
        assert h.ids[0] in ("a5", "a0")
        with pytest.raises(kyrodb.CollectionNotFound):
            await db.search("missing_" + name, [1, 0])
        await db.drop_collection(name)
