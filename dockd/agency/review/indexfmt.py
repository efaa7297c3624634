"""The review's side of the stations' clip index (docs/clip-index.md, issue #14): its object names come
from :mod:`dockd.core.clipindex` and each segment is checked by the stations' own verifier
(:func:`dockd.evidence.clipindex.verify_chain`) in :func:`check_segment`. Object names (hive-style
partitions, readable by DuckDB, Trino, Athena and Spark as JSON lines):

    {prefix}/_index/clips/station={station}/date={YYYY-MM-DD}/{seq:08d}.jsonl
    {prefix}/_index/docks/station={station}/date={YYYY-MM-DD}/{seq:08d}.jsonl
    {prefix}/_index/heads/station={station}/{seq:08d}.json
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import rfc8785

from dockd.core import clipindex, ijson
from dockd.trust.log import TrustState

HEAD_TYPE = clipindex.HEAD_TYPE
MAX_HEAD = 64 << 10
MAX_BODY = 256 << 20  # one segment is one station-day at most: a few MiB even for a busy station
MAX_LINE = 1 << 20
_HEAD_NAME = re.compile(r"station=([^/]+)/(\d{8})\.json$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class SegmentInvalid(ValueError):
    """Why a segment is left out (the caller names the station and seq)."""


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def heads_prefix(prefix: str) -> str:
    return _join(prefix, "_index", "heads") + "/"


def head_key(prefix: str, station: str, seq: int) -> str:
    return clipindex.head_key(prefix, station, seq)


def body_key(prefix: str, which: str, station: str, date: str, seq: int) -> str:
    """``which`` is "clips" or "docks"."""
    return (clipindex.clips_key if which == "clips" else clipindex.docks_key)(prefix, station, date, seq)


def parse_head_key(prefix: str, key: str) -> tuple[str, int] | None:
    """(station, seq) of a head object key under ``prefix``; None for anything else in that folder."""
    rest = key[len(heads_prefix(prefix)):] if key.startswith(heads_prefix(prefix)) else None
    m = _HEAD_NAME.fullmatch(rest) if rest is not None else None
    if not m or "/" in m.group(1) or int(m.group(2)) < 1:
        return None
    return m.group(1), int(m.group(2))


def head_digest(head: dict[str, Any]) -> str:
    """What the next head's ``prev`` holds: SHA-256 of the JCS form of the whole head, signature included."""
    return hashlib.sha256(rfc8785.dumps(head)).hexdigest()


def parse_head(raw: bytes) -> Any:
    try:
        return ijson.loads(raw, max_bytes=MAX_HEAD)
    except ijson.Invalid as e:
        raise SegmentInvalid(f"head is not strict JSON: {e}") from None


def check_segment(state: TrustState, prefix: str, station: str, seq: int, head_raw: bytes, prev: str | None,
                  clips_raw: bytes | None, docks_raw: bytes | None) -> tuple[list[dict[str, Any]],
                                                                           list[dict[str, Any]], str]:
    """The one verification of a segment, the stations' own (:func:`dockd.evidence.clipindex.verify_chain`):
    the head (strict form, signature by a key enrolled as ``station`` for this station at the head's ``at``,
    ``prev`` = ``prev``, the digest of the verified head before it) and both bodies (keys, size, sha256, lines,
    each line a strict clip or dock line); returns (clip lines, dock lines, the head's digest as
    :func:`head_digest` computes it) or raises SegmentInvalid."""
    from dockd.evidence.clipindex import StoredSegment, verify_chain

    after = (seq - 1, prev) if seq > 1 and prev is not None else None
    check = verify_chain(station, [StoredSegment(seq, head_raw, clips_raw, docks_raw)], state, prefix=prefix,
                         after=after)
    got = list(check)
    if check.problems or not got:
        raise SegmentInvalid(check.problems[0].reason if check.problems else "not verified")
    return got[0].clip_lines(), got[0].dock_lines(), got[0].head_hash
