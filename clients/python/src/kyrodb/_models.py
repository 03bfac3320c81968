"""Typed results. Every class keeps the server's whole answer in ``raw`` (fields a newer server adds
are there before this package knows them)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Mapping

JSON = dict[str, Any]


def _value_of(item: Mapping[str, Any]) -> bytes | None:
    """A JSON item's value: ``value`` (UTF-8 text) or ``value_hex`` (any bytes); None when absent."""
    if item.get("value") is not None:
        return str(item["value"]).encode()
    if item.get("value_hex") is not None:
        return bytes.fromhex(str(item["value_hex"]))
    if item.get("value_b64") is not None:
        return base64.b64decode(str(item["value_b64"]))
    return None


@dataclass(frozen=True)
class Entry:
    """A key's value and the sequence number it was written at (``if_seq`` for compare-and-set)."""

    value: bytes
    seq: int


@dataclass(frozen=True)
class ScanPage:
    """One page of a range scan: (key, value) pairs ascending; ``next_start`` continues it."""

    items: list[tuple[int, bytes]]
    next_start: int | None

    @classmethod
    def from_json(cls, j: JSON) -> ScanPage:
        items = [(int(i["key"]), _value_of(i) or b"") for i in j["items"]]
        ns = j.get("next_start")
        return cls(items=items, next_start=None if ns is None else int(ns))


@dataclass(frozen=True)
class KeyspaceInfo:
    name: str
    keys: int

    @classmethod
    def from_json(cls, j: JSON) -> KeyspaceInfo:
        return cls(name=str(j["name"]), keys=int(j["keys"]))


@dataclass(frozen=True)
class DeleteResult:
    """How many of the named documents were deleted, and how many did not exist."""

    deleted: int
    absent: int

    @classmethod
    def from_json(cls, j: JSON) -> DeleteResult:
        return cls(deleted=int(j["deleted"]), absent=int(j["absent"]))


@dataclass(frozen=True)
class UpsertResult:
    """Documents written (durable and searchable), the last write's sequence number and how many
    requests it took."""

    upserted: int
    seq: int
    requests: int = 1


@dataclass(frozen=True)
class CollectionInfo:
    """A collection's schema, live document count and index state."""

    name: str
    documents: int
    schema: JSON
    indexes: JSON
    raw: JSON = field(repr=False)

    @classmethod
    def from_json(cls, j: JSON) -> CollectionInfo:
        return cls(
            name=str(j["name"]),
            documents=int(j.get("documents", 0)),
            schema=dict(j.get("schema") or {}),
            indexes=dict(j.get("indexes") or {}),
            raw=j,
        )


@dataclass(frozen=True)
class Document:
    """A stored document (``Client.get_document``), or one to write (``Client.upsert``).

    ``text`` maps text fields to strings, ``vectors`` vector fields to lists of floats, ``fields``
    metadata fields to values; ``timestamp`` fills the collection's timestamp field (RFC 3339 or
    epoch milliseconds).
    """

    id: str
    text: dict[str, str] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    vectors: dict[str, list[float]] = field(default_factory=dict)
    timestamp: str | int | None = None

    @classmethod
    def from_json(cls, j: JSON) -> Document:
        return cls(
            id=str(j["id"]),
            text=dict(j.get("text") or {}),
            fields=dict(j.get("fields") or {}),
            vectors={k: list(v) for k, v in (j.get("vectors") or {}).items()},
        )

    def to_json(self) -> JSON:
        out: JSON = {"id": self.id}
        if self.text:
            out["text"] = self.text
        if self.fields:
            out["fields"] = self.fields
        if self.vectors:
            out["vectors"] = self.vectors
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp
        return out


@dataclass(frozen=True)
class Hit:
    """One search result. ``fields``/``text``/``vectors`` are present when asked for with ``with_``;
    ``components`` (hybrid search with ``explain``) holds each component's rank and score."""

    id: str
    score: float
    fields: dict[str, Any] | None = None
    text: dict[str, str] | None = None
    vectors: dict[str, list[float]] | None = None
    components: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, j: JSON) -> Hit:
        return cls(
            id=str(j["id"]),
            score=float(j["score"]),
            fields=j.get("fields"),
            text=j.get("text"),
            vectors=j.get("vectors"),
            components=j.get("components"),
        )


@dataclass(frozen=True)
class SearchResult:
    """Hits best first; ``plan`` with ``explain=True`` (indexes used, candidate counts, time per
    stage)."""

    hits: list[Hit]
    plan: JSON | None = None
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, j: JSON) -> SearchResult:
        return cls(hits=[Hit.from_json(h) for h in j.get("hits", [])], plan=j.get("plan"), raw=j)

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.hits]


@dataclass(frozen=True)
class Limits:
    """The server's request limits (``/build_info``), used to size batches."""

    body_bytes_max: int
    batch_keys_max: int
    documents_per_batch_max: int
    raw: JSON = field(repr=False)

    @classmethod
    def from_json(cls, j: JSON) -> Limits:
        return cls(
            body_bytes_max=int(j.get("body_bytes_max", 8 << 20)),
            batch_keys_max=int(j.get("batch_keys_max", 1000)),
            documents_per_batch_max=int(j.get("documents_per_batch_max", 1000)),
            raw=j,
        )
