"""The queue's read queries, in plain SQL over a DB-API ``sqlite3`` connection: one home for each.

Both ways of reading the queue use these functions: :class:`dockd.queue.store.Queue` (the daemon and
every writing command, through SQLAlchemy's connection pool) and :class:`QueueReader` (the read-only
commands ``status``, ``queue`` and ``show``), which opens the file read-only with the standard library
alone so that such a command does not import SQLAlchemy at all (about 0.2 s of its ~0.3 s).

Every query here is served by an index or a summary table (``tests/unit/test_scale.py`` checks the
plans), so its cost follows the work in flight, not the station's history.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dockd.core import ijson
from dockd.core.errors import NotFound
from dockd.core.lifecycle import IN_STORAGE, NOT_YET_UPLOADED, ON_CAMERA, STAGED_OR_LATER, ClipState, ordered
from dockd.core.timefmt import normalise_time, rfc3339
from dockd.queue.records import Camera, Clip


def _execute(conn: sqlite3.Connection, sql: str, args: Sequence[object] = ()) -> sqlite3.Cursor:
    """Every read goes through here (tests/unit/test_scale.py records the statements to check their plans)."""
    return conn.execute(sql, args)


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _dicts(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def cameras(conn: sqlite3.Connection) -> list[Camera]:
    return [Camera.from_mapping(m) for m in _dicts(_execute(conn, "SELECT * FROM cameras ORDER BY bay, serial"))]


def camera(conn: sqlite3.Connection, serial: str) -> Camera | None:
    got = _dicts(_execute(conn, "SELECT * FROM cameras WHERE serial = ?", (serial,)))
    return Camera.from_mapping(got[0]) if got else None


_ON_CAMERA = [str(s) for s in ordered(ON_CAMERA)]
_PROGRESS_ON_CAMERA = ("SELECT state, count(*), coalesce(sum(size), 0) FROM clips "
                       f"WHERE camera = ? AND state IN ({_marks(len(_ON_CAMERA))}) GROUP BY state")
_PROGRESS_WIPED = ("SELECT count(*), coalesce(sum(size), 0) FROM clips "
                   "WHERE camera = ? AND state = 'wiped' AND wiped_at >= ?")


def camera_progress(conn: sqlite3.Connection, serial: str) -> dict[str, dict[str, int]]:
    """Clips and bytes found / staged / uploaded / wiped for the camera's current dock.

    The current dock's work is every clip not yet wiped plus those wiped since it docked: two index
    searches (ix_clips_progress), so a camera's years of wiped clips are never read."""
    cam = camera(conn, serial)
    since = cam.docked_at if cam and cam.docked_at else 0.0
    reached = {  # from the lifecycle's named sets
        "found": list(ClipState),
        "staged": ordered(STAGED_OR_LATER),
        "uploaded": ordered(IN_STORAGE),
        "wiped": [ClipState.WIPED],
    }
    by_state = {s: (n, b) for s, n, b in _execute(conn, _PROGRESS_ON_CAMERA, (serial, *_ON_CAMERA))}
    by_state[str(ClipState.WIPED)] = tuple(_execute(conn, _PROGRESS_WIPED, (serial, since)).fetchone())
    out = {}
    for k, states in reached.items():
        got = [by_state.get(str(s), (0, 0)) for s in states]
        out[k] = {"clips": sum(n for n, _ in got), "bytes": sum(b or 0 for _, b in got)}
    return out


def clip(conn: sqlite3.Connection, clip_id: int) -> Clip:
    got = _dicts(_execute(conn, "SELECT * FROM clips WHERE id = ?", (clip_id,)))
    if not got:
        raise NotFound("clip", clip_id)
    return Clip.from_mapping(got[0])


def clips(conn: sqlite3.Connection, *, state: str | Sequence[str] | None = None, camera: str | None = None,
          limit: int | None = None, ids: Sequence[int] | None = None) -> list[Clip]:
    """Clips in id order, filtered; ``limit`` stops the read early (the id is the rowid: no sort)."""
    where: list[str] = []
    args: list[object] = []
    if state:
        states = [state] if isinstance(state, str) else list(state)
        where.append(f"state IN ({_marks(len(states))})")
        args += [str(s) for s in states]
    if camera:
        where.append("camera = ?")
        args.append(camera)
    if ids is not None:
        where.append(f"id IN ({_marks(len(ids))})")
        args += list(ids)
    sql = "SELECT * FROM clips" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
    if limit:
        sql += " LIMIT ?"
        args.append(int(limit))
    return [Clip.from_mapping(m) for m in _dicts(_execute(conn, sql, args))]


def counts_and_bytes(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """Per state: (clips, bytes), from the ``state_counts`` summary kept with every state change."""
    got = {s: (n, b) for s, n, b in _execute(conn, "SELECT state, clips, bytes FROM state_counts")}
    return {str(s): got.get(str(s), (0, 0)) for s in ClipState}


_NOT_YET = [str(s) for s in ordered(NOT_YET_UPLOADED)]
_OLDEST = f"SELECT min(created_at) FROM clips WHERE state IN ({_marks(len(_NOT_YET))})"


def oldest_pending(conn: sqlite3.Connection) -> float | None:
    """``created_at`` of the oldest clip not yet uploaded (``failed`` included: they wait for a replay)."""
    return _execute(conn, _OLDEST, _NOT_YET).fetchone()[0]


def sidecars(conn: sqlite3.Connection, clip_id: int) -> list[dict[str, Any]]:
    return _dicts(_execute(conn, "SELECT * FROM sidecars WHERE clip_id = ? ORDER BY path", (clip_id,)))


def skips(conn: sqlite3.Connection, camera: str | None = None) -> list[dict[str, Any]]:
    if camera:
        return _dicts(_execute(conn, "SELECT * FROM skips WHERE camera = ? ORDER BY id", (camera,)))
    return _dicts(_execute(conn, "SELECT * FROM skips ORDER BY id"))


def alarms(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return _dicts(_execute(conn, "SELECT * FROM alarms ORDER BY kind"))


def audit_rows(conn: sqlite3.Connection, *, camera: str | None = None, clip: int | None = None,
               since: str | None = None, after_seq: int = 0) -> list[dict[str, Any]]:
    """Audit rows after ``after_seq`` in seq order, filtered (by clip or camera: an index search)."""
    where: list[str] = ["seq > ?"]
    args: list[object] = [after_seq]
    if camera:
        where.append("camera = ?")
        args.append(camera)
    if clip is not None:
        where.append("clip = ?")
        args.append(clip)
    if since:
        where.append("at >= ?")
        args.append(normalise_time(since))
    rows = _dicts(_execute(conn, "SELECT * FROM audit WHERE " + " AND ".join(where) + " ORDER BY seq", args))
    for r in rows:
        r["detail"] = detail_of(r["detail"])
    return rows


def camera_facts(conn: sqlite3.Connection, serial: str) -> dict[str, Any] | None:
    """What the station knows about camera ``serial`` across docks (its ``camera_facts`` row), or None."""
    got = _dicts(_execute(conn, "SELECT * FROM camera_facts WHERE serial = ?", (serial,)))
    return got[0] if got else None


def all_camera_facts(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Every camera's ``camera_facts`` row by serial (one row per camera ever docked, like ``cameras``)."""
    return {m["serial"]: m for m in _dicts(_execute(conn, "SELECT * FROM camera_facts"))}


def camera_docks(conn: sqlite3.Connection, serial: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` docks of ``serial``, newest first: ``{"docked_at", **detail}`` (uq_camera_dock)."""
    out = []
    for docked_at, raw in _execute(conn, "SELECT docked_at, detail FROM camera_docks WHERE camera = ? "
                                         "ORDER BY docked_at DESC LIMIT ?", (serial, int(limit))):
        d = detail_of(raw)
        out.append(d if isinstance(d, dict) else {"docked_at": rfc3339(docked_at), "detail": d})
    return out


class QueueReader:
    """The queue file opened read-only (``mode=ro``: this process can never change it), with the same
    read methods as :class:`dockd.queue.store.Queue`, for the read-only commands.

    The caller checks first that ``path`` is a regular file at schema version
    :data:`dockd.queue.fileformat.LATEST_VERSION` (the queries read tables of every migration); anything
    else goes through ``Queue``, which migrates or refuses it as before."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        uri = Path(os.path.abspath(self.path)).as_uri() + "?mode=ro"
        self.conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout=30000")

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    def cameras(self) -> list[Camera]:
        return cameras(self.conn)

    def camera(self, serial: str) -> Camera | None:
        return camera(self.conn, serial)

    def camera_progress(self, serial: str) -> dict[str, dict[str, int]]:
        return camera_progress(self.conn, serial)

    def camera_facts(self, serial: str) -> dict[str, Any] | None:
        return camera_facts(self.conn, serial)

    def all_camera_facts(self) -> dict[str, dict[str, Any]]:
        return all_camera_facts(self.conn)

    def camera_docks(self, serial: str, *, limit: int = 20) -> list[dict[str, Any]]:
        return camera_docks(self.conn, serial, limit=limit)

    def clip(self, clip_id: int) -> Clip:
        return clip(self.conn, clip_id)

    def clips(self, *, state: str | Sequence[str] | None = None, camera: str | None = None,
              limit: int | None = None, ids: Sequence[int] | None = None) -> list[Clip]:
        return clips(self.conn, state=state, camera=camera, limit=limit, ids=ids)

    def counts_and_bytes(self) -> dict[str, tuple[int, int]]:
        return counts_and_bytes(self.conn)

    def counts(self) -> dict[str, int]:
        return {s: n for s, (n, _b) in counts_and_bytes(self.conn).items()}

    def oldest_pending(self) -> float | None:
        return oldest_pending(self.conn)

    def sidecars(self, clip_id: int) -> list[dict[str, Any]]:
        return sidecars(self.conn, clip_id)

    def skips(self, camera: str | None = None) -> list[dict[str, Any]]:
        return skips(self.conn, camera)

    def alarms(self) -> list[dict[str, Any]]:
        return alarms(self.conn)

    def audit_rows(self, *, camera: str | None = None, clip: int | None = None, since: str | None = None,
                   after_seq: int = 0) -> list[dict[str, Any]]:
        return audit_rows(self.conn, camera=camera, clip=clip, since=since, after_seq=after_seq)


# ---------------------------------------------------------------- the detail column


def detail_of_fast(raw: object) -> object:
    """:func:`detail_of` with the plain C parser first: the chain check reads millions of rows. What it lets
    through that strict I-JSON would refuse (NaN, a duplicate name) cannot be canonicalised or hashes
    differently, so the chain check still names the row."""
    try:
        return json.loads(raw, parse_constant=_no_constant)  # type: ignore[arg-type]
    except (ValueError, TypeError, RecursionError):  # RecursionError: nesting deeper than the C parser takes
        return detail_of(raw)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def detail_of(raw: object) -> object:
    """An audit row's ``detail`` column parsed; a row someone altered into non-JSON (or deep, huge, ...)
    comes back as its raw text, not a dict, so that readers carry on and the chain check names the row."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return repr(raw)
    try:
        return ijson.loads(raw)
    except (ijson.Invalid, TypeError):
        return raw


