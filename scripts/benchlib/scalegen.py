"""A station with years of history, generated through dockd's own queue code (for ``scripts/bench scale``).

Every clip goes through :meth:`Queue._insert_discovered` and :meth:`Queue._transition` exactly as the
offloader, uploader and wipe gate drive them (discovered -> copying -> staged -> uploading -> uploaded
-> wiped, each with its chained audit row and its ``state_counts`` update); the only difference from a
real station is that ``batch`` clips share one write transaction instead of one each, so a million clips
take minutes. Days pass as they would: ``per_day`` clips a day over ``cameras`` cameras, each finished
day's audit segment marked exported (``audit.exported`` row) and the chain head signed with the station
key once a day. The most recent clips are left in every other state (a few each), the latest uploaded
and wiped ones with their staged copy still present (not yet pruned).

    python scripts/benchlib/scalegen.py DATA_DIR N [--cameras 40] [--per-day 1000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select

from dockd.core import audit as chain
from dockd.core.lifecycle import ClipEvent as E
from dockd.evidence import keys
from dockd.evidence import manifest as mf
from dockd.queue.store import (
    _BUMP_COUNT,
    _LAST_AUDIT,
    Queue,
    audit_exports,
    audit_heads,
    audit_log,
    clips,
    rfc3339,
    rfc3339_ns,
)

DAY = 86400.0
START = datetime(2023, 1, 1, tzinfo=UTC).timestamp()


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def generate(data_dir: Path, n: int, *, cameras: int = 40, per_day: int = 1000, batch: int = 5000,
             station: str = "bench", progress=None, bulk: bool = True) -> dict:
    """Fill ``data_dir/queue.db`` with ``n`` clips (see the module doc); return what was made."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = data_dir / "staging"
    staging.mkdir(exist_ok=True, mode=0o700)
    key, _ = keys.load_or_create(data_dir)
    q = Queue(data_dir / "queue.db")
    serials = [f"BWC-{i:04d}" for i in range(cameras)]
    step = DAY / per_day
    # the last clips stay in flight: a few in every state other than wiped
    tail = {"discovered": 5, "copying": 2, "staged": 5, "uploading": 2, "uploaded": 5, "failed": 3,
            "quarantined": 3, "wiped_recent": 5}
    n_tail = sum(tail.values())
    n_hist = max(0, n - n_tail)
    t0 = time.monotonic()
    try:
        for s in serials:
            q.dock_camera(s, source="watch", bay="dir:dock", now=START)
        day = _day(START)
        day_first = q.last_audit()[0] + 1
        i = 0
        while i < n_hist:
            with q.tx() as c:
                if bulk:
                    day, day_first = _bulk(q, c, key, station, serials, staging, i, min(batch, n_hist - i), step,
                                           day, day_first)
                    i += min(batch, n_hist - i)
                for _ in range(0 if bulk else min(batch, n_hist - i)):
                    t = START + i * step
                    if _day(t) != day:  # a day ended: export it (as the daemon does), sign the head
                        _close_day(q, c, key, station, day, day_first, t)
                        day, day_first = _day(t), _last_seq(c) + 1
                    cam = serials[i % cameras]
                    cid = q._insert_discovered(c, cam, f"DCIM/{i // cameras:07d}.MP4", 20_000_000 + i % 997,
                                               1_600_000_000_000_000_000 + i, t)
                    sha = f"{i:064x}"
                    q._transition(c, cid, E.COPY_STARTED, now=t)
                    q._transition(c, cid, E.STAGED, now=t, sha256=sha, staged_path=str(staging / f"{cid:010d}.clip"),
                                  object_key=f"bwc/{station}/{cam}/{sha}.mp4", verify_mode="reread")
                    q._transition(c, cid, E.UPLOAD_STARTED, now=t)
                    q._transition(c, cid, E.UPLOADED, now=t, detail={"backend": "s3"})
                    q._transition(c, cid, E.WIPE_STARTED, now=t)
                    q._transition(c, cid, E.WIPED, now=t, staged_path=None,
                                  detail={"receipt": {"sha256": sha, "checked": "sha256"}})
                    i += 1
            if progress:
                progress(i, n_hist, time.monotonic() - t0)
        now = START + n_hist * step
        # every camera docked again today: its wiped history belongs to earlier docks
        for s in serials:
            q.dock_camera(s, source="watch", bay="dir:dock", now=now)
        ids = _tail(q, staging, serials, tail, now) if n else {}  # n = 0: the same cameras, no clips
    finally:
        q.close()
    return {"clips": n, "history": n_hist, "in_flight": ids, "seconds": round(time.monotonic() - t0, 1)}


def _bulk(q: Queue, c, key, station: str, serials: list[str], staging: Path, start: int, count: int,
          step: float, day: str, day_first: int) -> tuple[str, int]:
    """The rows the loop in :func:`generate` writes for clips ``start .. start+count``, written with
    ``executemany``: the same clip rows, the same audit rows (content, JSON text and chain through
    :func:`dockd.audit.link`), the same ``state_counts``, heads and export records. tests/test_scale.py
    compares both paths row for row."""
    last = c.execute(_LAST_AUDIT).first()
    seq, prev = (last.seq, last.hash) if last else (0, chain.GENESIS)
    cid = c.execute(select(func.coalesce(func.max(clips.c.id), 0))).scalar_one()
    audit_rows, clip_rows, nbytes = [], [], 0

    def audit(at: str, ev: str, camera, clip, d: dict) -> None:
        nonlocal seq, prev
        seq += 1
        h = chain.link(prev, chain.content(seq, at, ev, camera, clip, d))
        audit_rows.append({"seq": seq, "at": at, "event": ev, "camera": camera, "clip": clip,
                           "detail": chain.detail_text(d), "prev_hash": prev, "hash": h})
        prev = h

    def flush() -> None:
        if clip_rows:
            c.execute(insert(clips), clip_rows)
        if audit_rows:
            c.execute(insert(audit_log), audit_rows)
        clip_rows.clear()
        audit_rows.clear()

    for i in range(start, start + count):
        t = START + i * step
        at = rfc3339(t)
        if _day(t) != day:
            flush()
            _close_day(q, c, key, station, day, day_first, t)
            seq, prev = c.execute(_LAST_AUDIT).one()
            day, day_first = _day(t), seq + 1
        cam = serials[i % len(serials)]
        cid += 1
        size, mtime_ns, sha = 20_000_000 + i % 997, 1_600_000_000_000_000_000 + i, f"{i:064x}"
        nbytes += size
        clip_rows.append({"id": cid, "camera": cam, "path": f"DCIM/{i // len(serials):07d}.MP4", "size": size,
                          "mtime_ns": mtime_ns, "state": "wiped", "sha256": sha, "staged_path": None,
                          "object_key": f"bwc/{station}/{cam}/{sha}.mp4", "manifest": None, "verify_mode": "reread",
                          "attempts": 0, "last_error": None, "next_attempt_at": None, "lease_owner": None,
                          "lease_expires": None, "upload_id": None, "created_at": t, "updated_at": t,
                          "staged_at": t, "uploaded_at": t, "wiped_at": t})
        audit(at, "clip.discovered", cam, cid, {"path": clip_rows[-1]["path"], "size": size,
                                               "mtime": rfc3339_ns(mtime_ns)})
        audit(at, "clip.copy_started", cam, cid, {"from": "discovered", "to": "copying"})
        audit(at, "clip.staged", cam, cid, {"from": "copying", "to": "staged"})
        audit(at, "clip.upload_started", cam, cid, {"from": "staged", "to": "uploading"})
        audit(at, "clip.uploaded", cam, cid, {"from": "uploading", "to": "uploaded", "backend": "s3"})
        audit(at, "clip.wipe_started", cam, cid, {"from": "uploaded", "to": "wiping"})
        audit(at, "clip.wiped", cam, cid, {"from": "wiping", "to": "wiped",
                                          "receipt": {"sha256": sha, "checked": "sha256"}})
    flush()
    c.execute(_BUMP_COUNT, {"s": "wiped", "n": count, "b": nbytes})
    return day, day_first


def _last_seq(c) -> int:
    r = c.execute(_LAST_AUDIT).first()
    return r.seq if r else 0


def _close_day(q: Queue, c, key, station: str, day: str, first: int, t: float) -> None:
    """What the daemon does after midnight: sign the head, export the day (here only its record)."""
    last = _last_seq(c)
    if last < first:
        return

    h = c.execute(select(audit_log.c.hash).where(audit_log.c.seq == last)).scalar_one()
    at = rfc3339(t)
    st = mf.sign({"type": "dockd.audit-head/1", "station": station, "seq": last, "hash": h, "at": at}, key)
    c.execute(insert(audit_heads).values(seq=last, hash=h, at=at, statement=json.dumps(st, sort_keys=True)))
    objkey = f"bwc/{station}/_audit/{day}.jsonl"
    c.execute(insert(audit_exports).values(day=day, first_seq=first, last_seq=last, object_key=objkey, at=t))
    q._audit(c, "audit.exported", detail={"day": day, "first_seq": first, "last_seq": last, "object_key": objkey},
             now=t)


def _tail(q: Queue, staging: Path, serials: list[str], tail: dict, now: float) -> dict:
    out: dict[str, list[int]] = {}
    k = 0

    def clip(state: str, events: list, last: dict | None = None) -> None:
        nonlocal k
        cam = serials[k % len(serials)]
        c, _ = q.discover(cam, f"DCIM/NEW{k:05d}.MP4", 1000 + k, 1_700_000_000_000_000_000 + k, now=now)
        p = staging / f"{c.id:010d}.clip"
        for j, ev in enumerate(events):
            vals = {}
            if ev is E.STAGED:
                p.write_bytes(b"x" * (1000 + k))
                vals = {"sha256": f"{k:064x}", "staged_path": str(p), "object_key": f"k/{k}"}
            if j == len(events) - 1 and last:
                vals.update(last)
            q.transition(c.id, ev, now=now, **vals)
        out.setdefault(state, []).append(c.id)
        k += 1

    path = [E.COPY_STARTED, E.STAGED, E.UPLOAD_STARTED, E.UPLOADED]
    for _ in range(tail["discovered"]):
        clip("discovered", [])
    for _ in range(tail["copying"]):
        clip("copying", [E.COPY_STARTED])
    for _ in range(tail["staged"]):
        clip("staged", path[:2])
    for _ in range(tail["uploading"]):
        clip("uploading", path[:3])
    for _ in range(tail["uploaded"]):
        clip("uploaded", path)
    for _ in range(tail["failed"]):
        clip("failed", [*path[:3], E.UPLOAD_FAILED])
    for _ in range(tail["quarantined"]):
        clip("quarantined", [E.QUARANTINE])
    for _ in range(tail["wiped_recent"]):  # wiped today, staged copy kept (keep_staged_hours)
        clip("wiped", [*path, E.WIPE_STARTED, E.WIPED])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("n", type=int)
    ap.add_argument("--cameras", type=int, default=40)
    ap.add_argument("--per-day", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--slow", action="store_true", help="every clip through Queue._transition (the reference path)")
    a = ap.parse_args()

    def progress(i, total, dt):
        print(f"  {i}/{total} clips in {dt:.0f} s", file=sys.stderr, flush=True)

    r = generate(a.data_dir, a.n, cameras=a.cameras, per_day=a.per_day, batch=a.batch, progress=progress,
                 bulk=not a.slow)
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
