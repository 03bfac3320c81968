"""What the sync and async clients share: request bodies, batching under the server's limits,
retry timing. No I/O here."""

from __future__ import annotations

import base64
import json
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote

from ._errors import BodyTooLarge
from ._models import JSON, Document, Limits

#: Error codes retried automatically (the server wrote nothing and asks to come back).
RETRYABLE_CODES = frozenset({"busy", "rate_limited", "unavailable"})

#: Documents per upsert request unless the caller or the server says fewer.
DOCUMENTS_PER_REQUEST = 500


def backoff_seconds(base: float, attempt: int, jitter: float) -> float:
    """Exponential backoff for retry ``attempt`` (1, 2, ...), capped at 10 s, with ``jitter`` in
    [0, 1) spreading it over [50%, 100%]."""
    return float(min(10.0, base * 2 ** (attempt - 1)) * (0.5 + jitter / 2))


def retry_after_seconds(header: str | None) -> float | None:
    """``Retry-After`` in seconds (the server sends delta-seconds), or None."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def seg(s: str) -> str:
    """A path segment, percent-encoded (ids may hold ``/``, spaces, anything)."""
    return quote(s, safe="")


def kv_params(
    keyspace: str | None,
    *,
    ttl_ms: int | None = None,
    if_absent: bool = False,
    if_seq: int | None = None,
) -> dict[str, Any]:
    p: dict[str, Any] = {}
    if keyspace is not None:
        p["keyspace"] = keyspace
    if ttl_ms is not None:
        p["ttl_ms"] = int(ttl_ms)
    if if_absent:
        p["if_absent"] = "true"
    if if_seq is not None:
        p["if_seq"] = int(if_seq)
    return p


def kv_item(key: int, value: bytes | str, keyspace: str | None, ttl_ms: int | None) -> JSON:
    """One ``batch_put`` item: text as ``value``, bytes as ``value_b64`` (binary-safe)."""
    out: JSON = {"key": int(key)}
    if isinstance(value, str):
        out["value"] = value
    else:
        out["value_b64"] = base64.b64encode(bytes(value)).decode()
    if keyspace is not None:
        out["keyspace"] = keyspace
    if ttl_ms is not None:
        out["ttl_ms"] = int(ttl_ms)
    return out


def doc_json(d: Document | Mapping[str, Any], auto_embed: bool | None) -> JSON:
    """A document as the server takes it."""
    j = d.to_json() if isinstance(d, Document) else dict(d)
    if auto_embed is not None and "auto_embed" not in j:
        j["auto_embed"] = auto_embed
    return j


def progress_bar(on: bool, items: object, desc: str) -> Any:
    """A tqdm bar over ``items`` when ``on`` (tqdm is the ``progress`` extra)."""
    if not on:
        return None
    from tqdm import tqdm

    total = len(items) if isinstance(items, Sequence) else None
    return tqdm(total=total, unit="doc", desc=desc)


class DocumentBatcher:
    """Cuts a stream of JSON items into request-sized lists: at most ``per_item_max`` items (and
    the server's per-batch maximum) and ``bytes_max`` bytes of JSON (at most 15/16 of the server's
    body limit, leaving room for the envelope)."""

    def __init__(
        self,
        limits: Limits,
        *,
        per_item_max: int | None,
        bytes_max: int | None = None,
        keys: bool = False,
    ) -> None:
        server_items = limits.batch_keys_max if keys else limits.documents_per_batch_max
        want = per_item_max or (server_items if keys else DOCUMENTS_PER_REQUEST)
        self.items_max = max(1, min(want, server_items))
        room = limits.body_bytes_max * 15 // 16
        self.bytes_max = max(1, min(bytes_max or room, room))
        self.body_bytes_max = limits.body_bytes_max

    def chunks(self, items: Iterable[JSON]) -> Iterator[list[JSON]]:
        chunk: list[JSON] = []
        size = 0
        for i, item in enumerate(items):
            n = len(json.dumps(item, separators=(",", ":")).encode()) + 1
            if n > self.bytes_max:
                what = f"item {i}" + (f" (id {item['id']!r})" if "id" in item else "")
                raise BodyTooLarge(
                    f"{what} is {n} bytes of JSON; a request body is at most "
                    f"{self.body_bytes_max} bytes (the server's body_bytes_max)",
                    status=413,
                )
            if chunk and (len(chunk) >= self.items_max or size + n > self.bytes_max):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += n
        if chunk:
            yield chunk


def search_body(
    vector: Sequence[float] | None,
    text: str | None,
    using: str | None,
    filter: Mapping[str, Any] | None,
    limit: int,
    ef: int | None,
    threshold: float | None,
    with_: Sequence[str],
    explain: bool,
    exact: bool,
) -> JSON:
    """The body of ``POST /v2/collections/{name}/search``."""
    b: JSON = {"limit": int(limit), "with": list(with_)}
    if vector is not None:
        b["vector"] = [float(x) for x in vector]
    if text is not None:
        b["text"] = text
    if using is not None:
        b["using"] = using
    if filter is not None:
        b["filter"] = dict(filter)
    if ef is not None:
        b["ef"] = int(ef)
    if threshold is not None:
        b["threshold"] = float(threshold)
    if explain:
        b["explain"] = True
    if exact:
        b["exact"] = True
    return b


def hybrid_body(
    collection: str,
    vector: Sequence[float] | None,
    vector_text: str | None,
    using: str | None,
    vector_threshold: float | None,
    vectors: Sequence[Mapping[str, Any]] | None,
    text: str | Mapping[str, Any] | None,
    filter: Mapping[str, Any] | None,
    time_range: Mapping[str, Any] | None,
    fusion: str | Mapping[str, Any],
    limit: int,
    candidates: int | None,
    with_: Sequence[str],
    explain: bool,
    exact: bool,
) -> JSON:
    """The body of ``POST /v2/search/hybrid``."""
    b: JSON = {"collection": collection, "limit": int(limit), "with": list(with_)}
    vs: list[JSON] = [dict(v) for v in vectors or []]
    if vector is not None or vector_text is not None:
        one: JSON = {}
        if vector is not None:
            one["embedding"] = [float(x) for x in vector]
        if vector_text is not None:
            one["text"] = vector_text
        if using is not None:
            one["using"] = using
        if vector_threshold is not None:
            one["threshold"] = float(vector_threshold)
        vs.insert(0, one)
    if len(vs) == 1:
        b["vector_similarity"] = vs[0]
    elif vs:
        b["vector_similarity"] = vs
    if text is not None:
        b["text_search"] = text if isinstance(text, str) else dict(text)
    if filter is not None:
        b["metadata_filters"] = dict(filter)
    if time_range is not None:
        b["temporal_range"] = dict(time_range)
    b["fusion_strategy"] = fusion if isinstance(fusion, str) else dict(fusion)
    if candidates is not None:
        b["candidates"] = int(candidates)
    if explain:
        b["explain"] = True
    if exact:
        b["exact"] = True
    return b
