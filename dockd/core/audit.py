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
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import jcs

GENESIS = "0" * 64


# The row content stays a plain dict (not a TypedDict): rfc8785.dumps accepts JSON values typed as dicts of
# str keys, and a TypedDict is not one of those to mypy.
def content(
    seq: int, at: str, event: str, camera: str | None, clip: int | None, detail: dict[str, Any]
) -> dict[str, Any]:
    return {"seq": seq, "at": at, "event": event, "camera": camera, "clip": clip, "detail": detail}


def link(prev_hash: str, row_content: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + jcs.dumps(row_content)).hexdigest()


def detail_text(detail: dict[str, Any]) -> str:
    """How a row's ``detail`` is stored: its RFC 8785 form, so that verification can hash the stored text
    as it is (:func:`link_stored`) instead of parsing and re-serialising every row."""
    return jcs.dumps(detail).decode("utf-8")


_str = json.encoder.encode_basestring  # the C string encoder: RFC 8785's escapes (see dockd.core.jcs)


def link_stored(prev_hash: str, seq: object, at: object, event: object, camera: object, clip: object,
                detail: object) -> str | None:
    """The row's link computed from its stored columns without parsing ``detail``, or None when the
    columns are not of the shape this needs (then :func:`link` over the parsed row decides).

    The bytes hashed are ``{"at":…,"camera":…,"clip":…,"detail":<stored text>,"event":…,"seq":…}``,
    which is the JCS of the row's content exactly when the stored detail text is the JCS of the detail
    (as :func:`detail_text` writes it). So a result equal to the row's ``hash`` proves the row intact
    (up to SHA-256 collisions); a different result proves nothing by itself -- a row written by an older
    dockd stored its detail in another (equivalent) layout -- and the caller falls back to :func:`link`."""
    if type(seq) is not int or type(at) is not str or type(event) is not str or type(detail) is not str:
        return None
    if camera is not None and type(camera) is not str:
        return None
    if clip is not None and type(clip) is not int:
        return None
    try:
        b = (f'{{"at":{_str(at)},"camera":{"null" if camera is None else _str(camera)},'
             f'"clip":{"null" if clip is None else clip},"detail":{detail},"event":{_str(event)},"seq":{seq}}}')
        return hashlib.sha256((prev_hash + b).encode("utf-8")).hexdigest()
    except UnicodeEncodeError:  # a lone surrogate: only the full path can say what is wrong
        return None


# (seq, at, event, camera, clip, detail text, prev_hash, hash): an audit row as the queue stores it
StoredRow = Sequence[Any]


def first_bad_stored(rows: Iterable[StoredRow], parse_detail: Callable[[object], object],
                     start_prev: str = GENESIS, start_seq: int = 1) -> tuple[int, str] | None:
    """:func:`first_bad` over rows as stored, hashing each row's stored text when it is canonical (rows
    written by this dockd) and parsing it with ``parse_detail`` only when that does not match (older rows,
    or a row that is in fact altered: :func:`first_bad` then names the reason). Same verdicts, several
    times faster on a long log."""
    prev, expect = start_prev, start_seq
    for r in rows:
        seq, at, event, camera, clip, detail, prev_hash, h = r
        if seq != expect or prev_hash != prev or h != link_stored(prev, seq, at, event, camera, clip, detail):
            row = {"seq": seq, "at": at, "event": event, "camera": camera, "clip": clip,
                   "detail": parse_detail(detail), "prev_hash": prev_hash, "hash": h}
            bad = first_bad([row], start_prev=prev, start_seq=expect)
            if bad is not None:
                return bad
        prev, expect = h, expect + 1
    return None


def first_bad(
    rows: Iterable[Mapping[str, Any]], start_prev: str = GENESIS, start_seq: int = 1
) -> tuple[int, str] | None:
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
