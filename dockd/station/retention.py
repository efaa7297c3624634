"""Audit retention: compact days that left the station, behind a signed checkpoint.

With ``[audit] keep_days = N`` (0, the default, keeps every row), the daemon compacts at most one
day per housekeeping pass, oldest first, when all of this holds:

* the day is older than N days and its segment was exported (``audit_exports``);
* its rows are exactly the next rows after the last checkpoint (seq contiguous, no gap);
* they chain from the last checkpoint's hash (recomputed here, row by row);
* central storage holds the segment byte for byte: the object is read back and its SHA-256 and
  size equal those of the segment rebuilt from the local rows.

Then, in one queue transaction, a checkpoint ``{seq, hash}`` of the day's last row, signed by the
station key like a chain head (``dockd.audit-head/1`` statements; type ``dockd.audit-checkpoint/1``),
is stored, the rows up to it are deleted, and an ``audit.compacted`` event is appended.

What stays provable locally: every row after the checkpoint chains from the checkpoint's hash
(``dockd audit --verify`` starts there); the checkpoint itself verifies with the station key;
signed heads at or after it still match their rows; heads before it verify by signature only.
What is proven from storage: the compacted rows themselves, from the exported daily segments
(``{prefix}/{station}/_audit/{day}.jsonl`` and their signed ``.head.json``): each segment chains
from the previous one's last hash, and the last one's last hash is the checkpoint's hash.
Clip rows are not compacted (the queue's indexes keep them out of the hot paths).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import structlog

from dockd.core import audit as chain
from dockd.evidence import manifest as mf
from dockd.evidence.keys import StationKey
from dockd.queue.store import Queue, rfc3339
from dockd.station.auditlog import segment_body
from dockd.storage.base import Backend

log = structlog.get_logger("dockd.retention")


def compact_one_day(queue: Queue, backend: Backend, key: StationKey, station: str, keep_days: float,
                    now: float) -> dict | None:
    """Compact the oldest exported day older than ``keep_days`` if storage proves it holds it.

    Returns ``{"day", "seq", "rows"}`` when a day was compacted, ``{"refused": reason, "day"}`` when a
    due day could not be (nothing is deleted then), or None when no day is due."""
    if keep_days <= 0:
        return None
    horizon = datetime.fromtimestamp(now - keep_days * 86400, UTC).strftime("%Y-%m-%d")
    cp = queue.audit_checkpoint()
    start, prev = (cp["seq"] + 1, cp["hash"]) if cp else (1, chain.GENESIS)
    rec = queue.audit_export_starting_at(start)
    if rec is None or rec["day"] >= horizon:
        return None
    day = rec["day"]
    rows = []
    for r in queue.iter_audit(after_seq=start - 1, page=2000):  # one day's rows: bounded
        if r["seq"] > rec["last_seq"]:
            break
        rows.append(r)

    def refuse(why: str) -> dict:
        log.warning("audit day not compacted", day=day, reason=why)
        return {"refused": why, "day": day}

    if [r["seq"] for r in rows] != list(range(start, rec["last_seq"] + 1)):
        return refuse("the day's rows here are not the contiguous seq range it was exported as")
    if any(r["at"][:10] != day for r in rows):
        return refuse("the rows in the day's seq range are not all of that day")
    bad = chain.first_bad(rows, start_prev=prev, start_seq=start)
    if bad:
        return refuse(f"chain broken at seq {bad[0]}: {bad[1]}")
    body = segment_body(rows)
    want = (hashlib.sha256(body).hexdigest(), len(body))
    try:
        got = backend.read_sha256(rec["object_key"])
    except Exception as e:  # noqa: BLE001 - storage down or object missing: keep the rows
        return refuse(f"cannot read the segment back from storage: {e}")
    if tuple(got) != want:
        return refuse(f"storage holds different bytes for {rec['object_key']}")
    last = rows[-1]
    at = rfc3339(now)
    st = mf.sign({"type": "dockd.audit-checkpoint/1", "station": station, "seq": last["seq"], "hash": last["hash"],
                  "at": at, "day": day, "first_seq": start, "segment": rec["object_key"],
                  "segment_sha256": want[0]}, key)
    n = queue.compact_audit(last["seq"], last["hash"], at, json.dumps(st, sort_keys=True),
                            {"day": day, "segment": rec["object_key"]}, now=now)
    log.info("audit day compacted", day=day, seq=last["seq"], rows=n)
    return {"day": day, "seq": last["seq"], "rows": n}
