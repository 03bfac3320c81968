"""Retrieval over a folder of Markdown files with KyroDB: the server embeds the chunks itself
(all-MiniLM-L6-v2, auto_embed) and answers each question with one hybrid request (vector + BM25,
fused with RRF). The quickstart (docs/quickstart-rag.md) runs it.

    python markdown_rag.py index docs/                     # chunk every *.md by heading, upload
    python markdown_rag.py ask "how are writes made durable?"
    python markdown_rag.py ask "group commit" --since 30d --explain

Settings: --url / $KYRODB_URL (default http://127.0.0.1:8080), --token / $KYRODB_TOKEN,
--collection (default "docs").
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import datetime, timezone
from typing import Any, Iterator

import kyrodb

CHUNK_CHARS = 1500
SCHEMA = {
    "text_fields": ["title", "body"],
    "fields": {"path": "keyword", "modified": "datetime"},
    "timestamp_field": "modified",
    "vectors": {"text": {"dim": 384, "metric": "cosine",
                         "embed": {"model": "all-MiniLM-L6-v2", "source": "body"}}},
}


def chunks(root: str) -> Iterator[dict[str, Any]]:
    """Each Markdown file cut at its headings (and every CHUNK_CHARS), as documents."""
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".md"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            modified = datetime.fromtimestamp(os.path.getmtime(path), timezone.utc)
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            heading, buf, n = rel, [], 0
            sections: list[tuple[str, str]] = []
            for line in text.splitlines():
                m = re.match(r"^#{1,6}\s+(.*)", line)
                if m:
                    sections.append((heading, "\n".join(buf)))
                    heading, buf = m.group(1).strip(), []
                else:
                    buf.append(line)
            sections.append((heading, "\n".join(buf)))
            for title, body in sections:
                body = body.strip()
                for i in range(0, len(body), CHUNK_CHARS):
                    part = body[i:i + CHUNK_CHARS]
                    if part:
                        yield {"id": f"{rel}#{n}", "text": {"title": title, "body": part},
                               "fields": {"path": rel[:1000]}, "timestamp": modified.isoformat()}
                        n += 1


def index(db: kyrodb.Client, collection: str, folder: str) -> None:
    db.create_collection(collection, SCHEMA)
    docs = list(chunks(folder))
    if not docs:
        sys.exit(f"no Markdown files under {folder}")
    res = db.upsert(collection, docs, auto_embed=True, progress=sys.stderr.isatty())
    print(f"indexed {res.upserted} chunks of {len({d['fields']['path'] for d in docs})} files "
          f"into {collection!r} in {res.requests} requests")


def ask(db: kyrodb.Client, collection: str, question: str, limit: int, since: str | None,
        explain: bool) -> None:
    res = db.hybrid_search(collection, vector_text=question, using="text", text=question,
                           time_range={"last": since} if since else None, limit=limit,
                           with_=["fields", "text"], explain=explain)
    if not res.hits:
        print("no matches")
    for rank, h in enumerate(res.hits, 1):
        text = h.text or {}
        snippet = " ".join(text.get("body", "").split())[:160]
        print(f"{rank}. {h.score:.4f}  {h.fields.get('path') if h.fields else ''} — {text.get('title', '')}")
        print(f"   {snippet}")
        if explain and h.components:
            print("   " + ", ".join(f"{c}: rank {v['rank']}" for c, v in sorted(h.components.items())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--token")
    ap.add_argument("--collection", default="docs")
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("index", help="chunk and upload a folder's Markdown files")
    i.add_argument("folder")
    a = sub.add_parser("ask", help="hybrid search")
    a.add_argument("question")
    a.add_argument("--limit", type=int, default=5)
    a.add_argument("--since", help="only chunks of files modified within this, e.g. 30d, 12h")
    a.add_argument("--explain", action="store_true")
    args = ap.parse_args()
    with kyrodb.Client(args.url, token=args.token) as db:
        try:
            if args.cmd == "index":
                index(db, args.collection, args.folder)
            else:
                ask(db, args.collection, args.question, args.limit, args.since, args.explain)
        except kyrodb.KyroDBError as e:
            sys.exit(f"kyrodb: {e}")


if __name__ == "__main__":
    main()
