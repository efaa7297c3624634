"""The current UTC day's audit rows leaving the station as signed *part segments* (issue #16).

A finished day leaves as one segment (:func:`dockd.station.auditlog.export_days`). Until then the day's
rows leave in parts, every ``[audit] part_interval_s`` and when the daemon stops, so that a clip disclosed
on the day it was offloaded carries its custody rows::

    {prefix}/{station}/_audit/{day}.part-{first_seq:012d}.jsonl       (``dockd audit --json`` lines)
    {prefix}/{station}/_audit/{day}.part-{first_seq:012d}.head.json   (signed head)

A part holds the rows after the previous part (after the last finished day for the first part of a day),
all of one UTC day, so consecutive parts chain: a part's ``prev_hash_of_first`` is the previous part's
``last_hash`` and its ``first_seq`` the previous ``last_seq + 1``.

**Head type.** A part head is the same ``dockd.audit-segment/1`` statement as a day's, with
``"part": true``. It claims exactly what a day head claims (rows ``first_seq..last_seq`` chained from
``prev_hash_of_first`` up to ``last_hash``, signed by the station), only not that they are the whole
day; so every check of a segment applies to a part unchanged: the chain anchors the station reads back
(:mod:`dockd.station.anchors`), the disclosure collector, ``dockd disclose verify`` and the bag's
VERIFY.txt recipe. Nothing takes a part for a day: the day's segment is read by its own key, and
retention (:mod:`dockd.station.retention`) relies only on day segments recorded in ``audit_exports``.

**Order and crash rule.** Body first, then head (a head in storage means its body is there), then the
record in the queue (``audit_parts``), only after both uploads succeeded. The objects are conditional
creates: never overwritten; the same bytes again succeed. A crash between upload and record makes the
next export start at the same ``first_seq`` while more rows may have arrived since. The rule: *what
storage holds under a first seq is the part*. Before uploading, the exporter reads the head there (or, if
only the body arrived, the body) and cuts its rows to the extent stored; rebuilt from the same rows the
body and head are the same bytes (the head has no timestamp and Ed25519 signatures are deterministic), so
the uploads succeed as no-ops, the part is recorded, and the newer rows go into the next part. Anything
else stored under that key (another key's signature after a rotation, foreign bytes) is a CONFLICT: the
export stops for that day; the finished day's segment, exported after midnight, is the authority anyway.

**Cost.** A part export reads only the rows after the last recorded part (a keyset read on the seq),
at most :data:`PART_ROWS` per part, plus one small read of the head key; never the day or the log.
Rows of an earlier day still waiting for their day segment are left to :func:`export_days` (no part is
made until they are out); a part stops at the first row of another date (a clock stepped back).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import structlog

from dockd.core import ijson
from dockd.evidence import manifest as mf
from dockd.evidence.keys import StationKey
from dockd.queue.store import Queue
from dockd.station.auditlog import signed_segment
from dockd.storage.base import Backend, ErrorClass, StoreFailure

log = structlog.get_logger("dockd.audit")

PART_ROWS = 20_000  # rows of one part at most: body and head in memory are bounded
MAX_PARTS = 50  # parts per call at most (a station that was offline catches up over a few calls)
MAX_BODY = 64 << 20  # a stored body read back after a crash (the collector's bound for a segment too)


def part_base(prefix: str, station: str, day: str, first_seq: int) -> str:
    """The part's object key without ``.jsonl`` / ``.head.json``."""
    return "/".join(p for p in (prefix, station, "_audit", f"{day}.part-{first_seq:012d}") if p)


def _next_rows(queue: Queue, today: str, until: int) -> list[dict]:
    """Today's rows after the last recorded part (or after the last exported day), up to ``until``."""
    tip = queue.last_audit_part()
    after = queue.last_exported_seq()
    if tip is not None and tip["day"] == today:
        after = max(after, tip["last_seq"])
    rows: list[dict] = []
    for r in queue.iter_audit(after_seq=after, page=min(PART_ROWS, 5000)):
        if r["seq"] > until or r["at"][:10] != today or len(rows) >= PART_ROWS:
            break
        rows.append(r)
    return rows


def _conflict(key: str, why: str) -> StoreFailure:
    return StoreFailure(ErrorClass.CONFLICT, f"{key}: {why}; not overwritten (the day's segment will be the "
                                              "authority)")


def _stored_extent(backend: Backend, base: str, rows: list[dict]) -> list[dict]:
    """``rows`` cut to what storage already holds under this first seq (a crash before the record), or
    all of them if nothing is there. The uploads that follow prove the bytes equal."""
    raw = backend.read_small(base + ".head.json", mf.MAX_BYTES)
    if raw is not None:
        try:
            head = ijson.loads(raw)
        except ijson.Invalid as e:
            raise _conflict(base + ".head.json", f"not a part head ({e})") from None
        last = head.get("last_seq") if isinstance(head, dict) else None
        n = last - rows[0]["seq"] + 1 if type(last) is int else 0
    else:
        body = backend.read_small(base + ".jsonl", MAX_BODY)
        if body is None:
            return rows
        n = body.count(b"\n")
    if not 1 <= n <= len(rows):
        raise _conflict(base, f"storage holds a part of {n} rows, this station has {len(rows)} from its first seq")
    return rows[:n]


def export_parts(queue: Queue, backend: Backend, key: StationKey, station: str, prefix: str,
                 now: float) -> list[str]:
    """Upload today's rows not yet in a part as new parts; return their body keys (empty: nothing new).
    Raises :class:`StoreFailure` when storage fails; what was uploaded and recorded before stays."""
    today = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    until = queue.last_audit()[0]  # only rows that exist now: the loop ends
    out: list[str] = []
    while len(out) < MAX_PARTS:
        rows = _next_rows(queue, today, until)
        if not rows:
            break
        base = part_base(prefix, station, today, rows[0]["seq"])
        rows = _stored_extent(backend, base, rows)
        body, head = signed_segment(rows, station, today, key, part=True)
        backend.put_bytes(base + ".jsonl", body, hashlib.sha256(body).hexdigest())
        backend.put_bytes(base + ".head.json", head, hashlib.sha256(head).hexdigest())
        queue.mark_audit_part(today, rows[0]["seq"], rows[-1]["seq"], rows[-1]["hash"], base + ".jsonl", now=now)
        log.info("audit part exported", day=today, first_seq=rows[0]["seq"], rows=len(rows), key=base + ".jsonl")
        out.append(base + ".jsonl")
    return out
