"""The clip index leaving the station: signed, chained segments of clip and dock lines (docs/clip-index.md).

Like the audit segments (:mod:`dockd.station.auditlog`), from the audit rows after the last exported
one: a segment covers a contiguous range of audit rows ``audit_from < seq <= audit_to`` on one UTC
date; its clip lines are the clips whose ``clip.uploaded`` event is in the range, its dock lines the
``camera.docked`` events. A finished date (its rows are followed by rows of another date, or the date
is before today) is exported as soon as possible; the current date every ``[index] interval_s`` if
something happened (a clip uploaded, a camera docked), and on demand (``dockd index export``).

Order of work for segment N (nothing lost, nothing claimed falsely):

1. plan: build both bodies and the signed head (``prev`` = SHA-256 of the JCS of head N-1) and commit
   them to the queue (``index_segments``, ``uploaded_at`` NULL) before anything leaves the station,
   so a crash never makes the station sign a second, different head N;
2. upload the clips body, the docks body, then the head (head last: a head's existence means both
   bodies are there), each a conditional create (the backends never overwrite: the same bytes again
   succeed, anything else is a CONFLICT, alarm ``clip-index``);
3. commit ``uploaded_at`` (bodies dropped from the queue) with the audit event ``index.exported``.

A planned segment not yet uploaded is retried first, and no new segment is planned until it is in
storage: a station offline for days uploads its missed segments in seq order when storage returns.
Cost: the audit rows of the range (keyset pages on the seq), one clip row and that clip's own audit
rows per upload (``ix_audit_clip``), one camera's rows of one dock for its anomalies
(``ix_audit_camera``): never the history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785
import structlog
from sqlalchemy import insert, select, update

from dockd.core import clipindex as ci
from dockd.core import ijson
from dockd.core.timefmt import rfc3339, rfc3339_ns
from dockd.evidence import manifest as mf
from dockd.evidence.keys import StationKey
from dockd.queue.schema import index_segments
from dockd.queue.store import Queue
from dockd.storage.base import Backend, ErrorClass, StoreFailure

log = structlog.get_logger("dockd.index")

DEFAULT_INTERVAL_S = 900.0
ALARM = "clip-index"

# The statements per clip line (tests/unit/test_clipindex.py checks their plans are index searches):
SQL_CLIP = "SELECT id, camera, path, size, mtime_ns, sha256, object_key, manifest FROM clips WHERE id = ?"
SQL_CLIP_EVENTS = "SELECT seq, event, detail FROM audit WHERE clip = ? ORDER BY seq"  # ix_audit_clip
# ``+event``: not by ix_audit_event (every camera's docks back to this camera's last one), but backwards
# along ix_audit_camera from the clip: the rows of this camera's current dock only.
SQL_DOCK_BEFORE = ("SELECT seq FROM audit WHERE camera = ? AND seq < ? AND +event = 'camera.docked' "
                   "ORDER BY seq DESC LIMIT 1")
SQL_ANOMALIES = ("SELECT clip, detail FROM audit WHERE camera = ? AND seq >= ? AND seq <= ? "
                 "AND event = 'camera.anomaly' ORDER BY seq")  # a seq range: one dock's rows


@dataclass(frozen=True)
class Planned:
    seq: int
    date: str
    audit_from: int
    audit_to: int
    head: bytes
    clips: bytes
    docks: bytes


def head_hash(head: dict) -> str:
    """What the next head's ``prev`` holds: SHA-256 of the JCS of the whole head, signature included."""
    return hashlib.sha256(rfc8785.dumps(head)).hexdigest()


# ------------------------------------------------------------------ the queue's record of segments


def _last(q: Queue) -> dict | None:
    with q.engine.connect() as c:
        r = c.execute(LAST).first()
    return dict(r._mapping) if r else None


PENDING = (select(index_segments).where(index_segments.c.uploaded_at.is_(None))  # partial ix_index_pending
           .order_by(index_segments.c.seq))
LAST = select(index_segments).order_by(index_segments.c.seq.desc()).limit(1)


def _pending(q: Queue) -> list[Planned]:
    with q.engine.connect() as c:
        rows = c.execute(PENDING).all()
    return [Planned(r.seq, r.date, r.audit_from, r.audit_to, r.head, r.clips or b"", r.docks or b"") for r in rows]


def segments(q: Queue) -> list[dict]:
    """Every segment the queue records (without bodies): for ``dockd index`` and tests."""
    cols = [c for c in index_segments.c if c.name not in ("clips", "docks", "head")]
    with q.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(*cols).order_by(index_segments.c.seq))]


# ------------------------------------------------------------------ building a segment


def _day(at: str) -> str:
    return at[:10]


def _epoch(at: str) -> float:
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0  # an audit time that does not parse (altered row): treat as old, so it is indexed


def _run(q: Queue, after: int, until: int, today: str) -> tuple[list[dict], bool]:
    """The audit rows ``after < seq <= until`` that share the first one's date, and whether that run is
    finished (a row of another date follows, or its date is before ``today``)."""
    rows: list[dict] = []
    for r in q.iter_audit(after_seq=after, page=1000):
        if rows and _day(r["at"]) != _day(rows[0]["at"]):
            return rows, True
        if r["seq"] > until:
            break
        rows.append(r)
    return rows, bool(rows) and _day(rows[0]["at"]) < today


def _clip_rows(q: Queue, clip_id: int) -> list[tuple[int, str, Any]]:
    """(seq, event, detail) of one clip's audit rows (ix_audit_clip: a handful of rows)."""
    with q.engine.connect() as c:
        dbapi = c.connection.driver_connection
        assert dbapi is not None
        got = dbapi.execute(SQL_CLIP_EVENTS, (clip_id,)).fetchall()
    return [(s, e, _loads(d)) for s, e, d in got]


def _loads(raw: Any) -> Any:
    try:
        return ijson.loads(raw)
    except (ijson.Invalid, TypeError):
        return None


def _dock_anomalies(q: Queue, camera: str, first: int, last: int) -> list[tuple[int | None, Any]]:
    """(clip, detail) of the ``camera.anomaly`` rows of ``camera`` with ``first <= seq <= last``."""
    with q.engine.connect() as c:
        dbapi = c.connection.driver_connection
        assert dbapi is not None
        got = dbapi.execute(SQL_ANOMALIES, (camera, first, last)).fetchall()
    return [(cl, _loads(d)) for cl, d in got]


def _dock_before(q: Queue, camera: str, seq: int) -> int:
    """Seq of the camera's last ``camera.docked`` before ``seq`` (0 if none): the dock that found the clip."""
    with q.engine.connect() as c:
        dbapi = c.connection.driver_connection
        assert dbapi is not None
        r = dbapi.execute(SQL_DOCK_BEFORE, (camera, seq)).fetchone()
    return r[0] if r else 0


def _clip_line(q: Queue, station: str, ev: dict) -> dict | None:
    with q.engine.connect() as c:
        dbapi = c.connection.driver_connection
        assert dbapi is not None
        r = dbapi.execute(SQL_CLIP, (ev["clip"],)).fetchone()
    if r is None:
        return None
    cid, camera, path, size, mtime_ns, sha, okey, manifest_text = r
    manifest = _loads(manifest_text) if manifest_text else None
    own = _clip_rows(q, cid)
    mkey = okey + ".manifest.json" if okey else ""
    for _s, e, d in own:  # the uploader put this clip's manifest beside another one's (same bytes)
        if e == "upload.duplicate_content" and isinstance(d, dict) and isinstance(d.get("manifest_key"), str):
            mkey = d["manifest_key"]
    found = min((s for s, e, _d in own if e == "clip.discovered"), default=ev["seq"])
    kinds = [d["kind"] for cl, d in _dock_anomalies(q, camera, _dock_before(q, camera, found), ev["seq"])
             if isinstance(d, dict) and isinstance(d.get("kind"), str)
             and (cl == cid or path in ci.anomaly_paths(d))]
    detail = ev["detail"] if isinstance(ev["detail"], dict) else {}
    return ci.clip_line(station=station, clip_id=cid, camera=camera, path=path, sha256=sha or "", size=size,
                        mtime=rfc3339_ns(mtime_ns), object_key=detail.get("object_key") or okey or "",
                        manifest_key=mkey, uploaded_at=ev["at"], manifest=manifest, anomalies=kinds)


def _dock_lines(station: str, rows: list[dict]) -> list[dict]:
    """Dock lines of the run's ``camera.docked`` rows; a dock's anomalies are its own detail's, else
    the ``camera.anomaly`` rows of that camera after it in the run (until its next dock)."""
    out = []
    for i, r in enumerate(rows):
        if r["event"] != "camera.docked" or not r["camera"]:
            continue
        extra = []
        for later in rows[i + 1:]:
            if later["camera"] != r["camera"]:
                continue
            if later["event"] == "camera.docked":
                break
            if later["event"] == "camera.anomaly" and isinstance(later["detail"], dict):
                extra.append(later["detail"])
        out.append(ci.dock_line(station=station, camera=r["camera"], at=r["at"], detail=r["detail"],
                                anomalies=extra))
    return out


def build(q: Queue, key: StationKey, station: str, prefix: str, rows: list[dict], prev: dict | None,
          now: float) -> Planned:
    """Segment ``prev.seq + 1`` over ``rows`` (one date, contiguous after ``prev``'s range), signed."""
    seq = prev["seq"] + 1 if prev else 1
    audit_from = prev["audit_to"] if prev else rows[0]["seq"] - 1
    date = _day(rows[0]["at"])
    clip_lines = [x for r in rows if r["event"] == "clip.uploaded" and r["clip"] is not None
                  if (x := _clip_line(q, station, r)) is not None]
    clips, docks = ci.body(clip_lines), ci.body(_dock_lines(station, rows))

    def member(k: str, b: bytes) -> dict:
        return {"key": k, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b), "lines": b.count(b"\n")}

    head = mf.sign({"type": ci.HEAD_TYPE, "station": station, "seq": seq, "date": date,
                    "audit_from": audit_from, "audit_to": rows[-1]["seq"],
                    "clips": member(ci.clips_key(prefix, station, date, seq), clips),
                    "docks": member(ci.docks_key(prefix, station, date, seq), docks),
                    "prev": prev["head_hash"] if prev else None, "at": rfc3339(now)}, key)
    return Planned(seq, date, audit_from, rows[-1]["seq"], mf.dumps(head), clips, docks)


def _plan_next(q: Queue, key: StationKey, station: str, prefix: str, now: float, interval_s: float,
               force: bool, until: int) -> Planned | None:
    prev = _last(q)
    after = prev["audit_to"] if prev else 0
    if prev is None:
        cp = q.audit_checkpoint()  # rows compacted before the index existed are not indexed
        after = cp["seq"] if cp else 0
    today = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    first = next(iter(q.iter_audit(after_seq=after, page=1)), None)
    if first is None or first["seq"] > until:
        return None
    # The current date: due once the last segment (or, before the first, the oldest row waiting) is
    # interval_s old; until then nothing is read. So a row waits about one interval at most, and a
    # daemon that just started does not publish a segment at its first tick.
    since = prev["planned_at"] if prev is not None else _epoch(first["at"])
    if not force and _day(first["at"]) >= today and now - since < interval_s:
        return None
    rows, finished = _run(q, after, until, today)
    seg = build(q, key, station, prefix, rows, prev, now)
    if not finished and not force and not seg.clips and not seg.docks:
        return None  # nothing to say yet about today: no empty segment every interval
    with q.tx() as c:
        c.execute(insert(index_segments).values(
            seq=seg.seq, date=seg.date, audit_from=seg.audit_from, audit_to=seg.audit_to, head=seg.head,
            head_hash=head_hash(json.loads(seg.head)), clips=seg.clips, docks=seg.docks, planned_at=now))
    return seg


# ------------------------------------------------------------------ uploading


def _upload(q: Queue, backend: Backend, prefix: str, station: str, seg: Planned, now: float) -> None:
    head = json.loads(seg.head)
    for k, b in ((head["clips"]["key"], seg.clips), (head["docks"]["key"], seg.docks),
                 (ci.head_key(prefix, station, seg.seq), seg.head)):
        backend.put_bytes(k, b, hashlib.sha256(b).hexdigest())  # conditional create: never overwrites
    with q.tx() as c:
        c.execute(update(index_segments).where(index_segments.c.seq == seg.seq)
                  .values(uploaded_at=now, clips=None, docks=None))
        q._audit(c, "index.exported", detail={
            "seq": seg.seq, "date": seg.date, "audit_from": seg.audit_from, "audit_to": seg.audit_to,
            "head_key": ci.head_key(prefix, station, seg.seq), "clips": head["clips"]["lines"],
            "docks": head["docks"]["lines"]}, now=now)
    log.info("index segment exported", seq=seg.seq, date=seg.date, clips=head["clips"]["lines"],
             docks=head["docks"]["lines"])


def export(q: Queue, backend: Backend, key: StationKey, station: str, prefix: str, now: float, *,
           interval_s: float = DEFAULT_INTERVAL_S, force: bool = False, max_segments: int = 1000) -> list[int]:
    """Upload what is due: first any segment planned but not yet in storage, then new ones in seq order
    (finished dates; the current date after ``interval_s``, or at once with ``force``). Returns the seqs
    uploaded. Raises :class:`StoreFailure` when storage fails (the rest waits for the next call); a
    CONFLICT (the key holds other bytes: never overwritten) also raises the alarm ``clip-index``."""
    done: list[int] = []
    # Only rows that exist now: each export appends its own `index.exported` row, which must not feed
    # the next segment of the same call (a forced export would chase its own tail).
    until = q.last_audit()[0]
    try:
        for seg in _pending(q):
            _upload(q, backend, prefix, station, seg, now)
            done.append(seg.seq)
        while len(done) < max_segments:
            nxt = _plan_next(q, key, station, prefix, now, interval_s, force, until)
            if nxt is None:
                break
            _upload(q, backend, prefix, station, nxt, now)
            done.append(nxt.seq)
    except StoreFailure as e:
        if e.cls is ErrorClass.CONFLICT:
            q.raise_alarm(ALARM, f"clip index: storage holds other bytes under a segment's key ({e}); "
                                 "nothing was overwritten, the export stops here", now=now)
        raise
    if done:
        q.clear_alarm(ALARM, now=now)
    return done


def iter_planned(q: Queue) -> Iterator[Planned]:
    """The segments planned but not yet in storage (tests and ``dockd index export``)."""
    yield from _pending(q)
