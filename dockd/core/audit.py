"""The audit log's hash chain. Pure functions; the queue stores the rows.

Each audit row's ``hash`` is ``SHA-256(prev_hash_hex || JCS(content))`` where
``content`` is the JSON object ``{"seq", "at", "event", "camera", "clip",
"detail"}`` canonicalised per RFC 8785 and ``prev_hash_hex`` is the previous
row's hash as 64 lowercase hex characters (sixty-four ``0`` for the first
row). Altering, deleting or reordering any row breaks every later link, and
anyone can recompute it from ``dockd audit --json`` output with standard
tools.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from . import jcs

GENESIS = "0" * 64


def content(seq: int, at: str, event: str, camera: str | None, clip: int | None,
            detail: dict[str, Any]) -> dict[str, Any]:
    return {"seq": seq, "at": at, "event": event, "camera": camera, "clip": clip, "detail": detail}


def link(prev_hash: str, row_content: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + jcs.dumps(row_content)).hexdigest()


def first_bad(rows: Iterable[dict[str, Any]], start_prev: str = GENESIS, start_seq: int = 1) -> tuple[int, str] | None:
    """Recompute the chain; return ``(seq, reason)`` of the first broken row, or None if intact.

    ``rows`` are dicts with the content fields plus ``prev_hash`` and ``hash``,
    in ascending ``seq`` order.
    """
    prev, expect = start_prev, start_seq
    for r in rows:
        if r["seq"] != expect:
            return expect, f"sequence gap: expected {expect}, found {r['seq']} (row deleted or reordered)"
        if r["prev_hash"] != prev:
            return r["seq"], "prev_hash does not match the previous row (row deleted, inserted or reordered)"
        if not isinstance(r["detail"], dict):  # the queue hands back an unparseable detail as its raw text
            return r["seq"], "detail is not a JSON object (row altered)"
        try:
            h = link(prev, content(r["seq"], r["at"], r["event"], r["camera"], r["clip"], r["detail"]))
        except (TypeError, ValueError, AttributeError):  # a value JCS cannot encode, a non-text hash, ...
            return r["seq"], "content cannot be canonicalised (row altered)"
        if h != r["hash"]:
            return r["seq"], "content does not match its hash (row altered)"
        prev, expect = r["hash"], expect + 1
    return None
