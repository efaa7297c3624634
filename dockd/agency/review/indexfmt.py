"""The consumer's check of the stations' clip index (docs/clip-index.md, issue #14), behind one function.

Task C writes the producer and ``dockd.evidence.clipindex.verify_chain``; until that lands, this module
checks the format as specified, and :func:`check_segment` is the one place to swap for it. Object names
(hive-style partitions, readable by DuckDB, Trino, Athena and Spark as JSON lines):

    {prefix}/_index/clips/station={station}/date={YYYY-MM-DD}/{seq:08d}.jsonl
    {prefix}/_index/docks/station={station}/date={YYYY-MM-DD}/{seq:08d}.jsonl
    {prefix}/_index/heads/station={station}/{seq:08d}.json
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import rfc8785

from dockd.core import ijson
from dockd.trust.log import TrustState

HEAD_TYPE = "dockd.index-head/1"
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
    return _join(prefix, "_index", "heads", f"station={station}", f"{seq:08d}.json")


def body_key(prefix: str, which: str, station: str, date: str, seq: int) -> str:
    return _join(prefix, "_index", which, f"station={station}", f"date={date}", f"{seq:08d}.jsonl")


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


def check_head(state: TrustState, prefix: str, station: str, seq: int, head: Any, prev: str | None) -> None:
    """Raise SegmentInvalid unless ``head`` is the signed head ``seq`` of ``station`` whose ``prev`` is
    ``prev`` (the previous head's digest; None for seq 1), signed by a key enrolled as ``station`` for this
    station at the head's own ``at``."""
    if not isinstance(head, dict) or head.get("type") != HEAD_TYPE:
        raise SegmentInvalid(f"not a {HEAD_TYPE} head")
    if head.get("station") != station or head.get("seq") != seq:
        raise SegmentInvalid(f"head names station {head.get('station')!r} seq {head.get('seq')!r}, stored as "
                             f"{station!r} seq {seq}")
    date = head.get("date")
    if not isinstance(date, str) or not DATE.match(date):
        raise SegmentInvalid("head has no date")
    af, at_ = head.get("audit_from"), head.get("audit_to")
    if type(af) is not int or type(at_) is not int or not 0 <= af <= at_:
        raise SegmentInvalid("head has no audit range")
    for which in ("clips", "docks"):
        b = head.get(which)
        if not isinstance(b, dict) or b.get("key") != body_key(prefix, which, station, date, seq) \
                or not isinstance(b.get("sha256"), str) or type(b.get("size")) is not int \
                or type(b.get("lines")) is not int:
            raise SegmentInvalid(f"head's {which} member is malformed or names another object")
    if head.get("prev") != prev:
        raise SegmentInvalid("chain broken: prev is not the digest of the previous head" if seq > 1
                             else "chain broken: seq 1 has a prev")
    v = state.verify_signed(head, "station", "at")
    if not v.ok:
        raise SegmentInvalid(f"signature: {v.reason}")
    kid = head["signature"]["key_id"]
    if not any(e.subject.get("name") == station for e in state.enrolments.get(kid, ())):
        raise SegmentInvalid(f"signed by key {kid}, which is not enrolled for station {station!r}")


def check_body(head: dict[str, Any], which: str, raw: bytes | None) -> list[dict[str, Any]]:
    """The lines of body ``which`` ("clips" or "docks") after checking them against the head."""
    spec = head[which]
    if raw is None:
        raise SegmentInvalid(f"{which} body {spec['key']} is missing")
    if len(raw) != spec["size"] or hashlib.sha256(raw).hexdigest() != spec["sha256"]:
        raise SegmentInvalid(f"{which} body does not match the head (size or sha256)")
    if raw and not raw.endswith(b"\n"):
        raise SegmentInvalid(f"{which} body's last line is not terminated")
    lines = raw.split(b"\n")[:-1] if raw else []
    if len(lines) != spec["lines"]:
        raise SegmentInvalid(f"{which} body has {len(lines)} lines, the head says {spec['lines']}")
    want = which[:-1]
    out = []
    for n, line in enumerate(lines, 1):
        try:
            o = ijson.loads(line, max_bytes=MAX_LINE)
        except ijson.Invalid as e:
            raise SegmentInvalid(f"{which} line {n}: {e}") from None
        if not isinstance(o, dict) or o.get("type") != want or o.get("station") != head["station"] \
                or not isinstance(o.get("camera"), str):
            raise SegmentInvalid(f"{which} line {n}: not a {want} line of station {head['station']!r}")
        out.append(o)
    return out


def check_segment(state: TrustState, prefix: str, station: str, seq: int, head: Any, prev: str | None,
                  clips_raw: bytes | None, docks_raw: bytes | None) -> tuple[list[dict[str, Any]],
                                                                           list[dict[str, Any]]]:
    """The one verification of a segment (swap for ``dockd.evidence.clipindex.verify_chain`` when it lands):
    the head (signature, enrolment, chain) and both bodies; returns (clip lines, dock lines) or raises
    SegmentInvalid."""
    check_head(state, prefix, station, seq, head, prev)
    return check_body(head, "clips", clips_raw), check_body(head, "docks", docks_raw)
