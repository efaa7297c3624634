"""The durable queue: SQLite through SQLAlchemy, the single source of truth.

Holds cameras, clips, multipart ledgers, skipped entries, alarms and the
append-only, hash-chained audit log. WAL mode, ``synchronous=FULL``, and every
write transaction is ``BEGIN IMMEDIATE`` so the audit chain's "read the last
hash, append the next row" cannot interleave with another writer.

Contract: :meth:`Queue.transition` validates the move with
:func:`dockd.core.lifecycle.next_state`, updates the clip, appends the audit event
and commits, all in one transaction, and only then returns; callers perform
the side effect (copy, upload, delete) after it returns.

Time is passed in (``now``, epoch seconds) so tests drive the clock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    String,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from dockd.core import audit as chain
from dockd.core.errors import IllegalTransition, NotFound, SchemaTooNew, UsageError
from dockd.core.lifecycle import (
    IN_STORAGE,
    ON_CAMERA,
    CameraState,
    ClipEvent,
    ClipState,
    next_state,
    ordered,
)
from dockd.core.timefmt import normalise_time, rfc3339, rfc3339_ns
from dockd.queue import reads, schema
from dockd.queue.fileformat import queue_path, refuse_foreign
from dockd.queue.reads import detail_of as _detail
from dockd.queue.reads import detail_of_fast as _row_detail
from dockd.queue.records import Camera, Clip
from dockd.queue.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    alarms,
    anomaly_counts,
    audit_checkpoints,
    audit_exports,
    audit_heads,
    audit_log,
    audit_parts,
    camera_docks,
    camera_facts,
    cameras,
    clips,
    parts,
    sidecars,
    skips,
    state_counts,
)

# Names other modules still import from here (their home is given): the records, the time
# formatting (dockd.core.timefmt) and the schema (dockd.queue.schema).
__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Camera", "Clip", "Queue", "audit_exports", "audit_heads", "audit_log",
           "clips", "normalise_time", "queue_path", "refuse_foreign", "rfc3339", "rfc3339_ns"]

# Columns only the lifecycle changes (Queue.transition): update_clip refuses them.
LIFECYCLE_COLUMNS = frozenset({"id", "state", "updated_at", "staged_at", "uploaded_at", "wiped_at",
                               "lease_owner", "lease_expires"})


# Statements of the hot paths (every clip state change), built once: building
# a Core statement costs more than SQLite takes to run it.
_LAST_AUDIT = select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
_INSERT_AUDIT = insert(audit_log)
_LAST_CHECKPOINT = (select(audit_checkpoints.c.seq, audit_checkpoints.c.hash)
                    .order_by(audit_checkpoints.c.seq.desc()).limit(1))
_CLIP_BY_ID = select(clips).where(clips.c.id == bindparam("cid"))
_CLIP_BY_IDENTITY = select(clips).where(clips.c.camera == bindparam("cam"), clips.c.path == bindparam("path"),
                                        clips.c.size == bindparam("size"), clips.c.mtime_ns == bindparam("mtime"))
_bump = sqlite_insert(state_counts).values(state=bindparam("s"), clips=bindparam("n"), bytes=bindparam("b"))
_BUMP_COUNT = _bump.on_conflict_do_update(  # state_counts += (n, b) for state s
    index_elements=["state"], set_={"clips": state_counts.c.clips + _bump.excluded.clips,
                                    "bytes": state_counts.c.bytes + _bump.excluded.bytes})
# Clip states in which the clip is still on its camera (lifecycle.ON_CAMERA: every state but wiped).
_ON_CAMERA = ordered(ON_CAMERA)
_PROGRESS_ON_CAMERA = (select(clips.c.state, func.count(), func.coalesce(func.sum(clips.c.size), 0))
                       .where(clips.c.camera == bindparam("cam"), clips.c.state.in_(_ON_CAMERA))
                       .group_by(clips.c.state))
_PROGRESS_WIPED = (select(func.count(), func.coalesce(func.sum(clips.c.size), 0))
                   .where(clips.c.camera == bindparam("cam"), clips.c.state == ClipState.WIPED,
                          clips.c.wiped_at >= bindparam("since")))
# ``+clips.state``: the same column, but SQLite does not use an index for it (unary +), so a filter
# on wiped/uploaded (the whole history) never outbids the partial index ix_clips_staged.
_NOT_INDEXED_STATE = literal_column("+clips.state", String)
_TO_PRUNE = (select(clips).where(clips.c.staged_path.is_not(None), clips.c.uploaded_at < bindparam("before"),
                                  _NOT_INDEXED_STATE.in_(ordered(IN_STORAGE)))
             .order_by(clips.c.uploaded_at, clips.c.id).limit(bindparam("n")))
_UPLOADING = select(clips.c.id).where(clips.c.state == ClipState.UPLOADING)
_UPLOADING_EXPIRED = _UPLOADING.where(clips.c.lease_expires < bindparam("t"))
_COUNTS = select(state_counts)
_CAMERAS = select(cameras).order_by(cameras.c.bay, cameras.c.serial)
_busy = clips.alias("busy")
_NEXT_DUE_UPLOAD = (  # claim_upload: the camera with the fewest uploads in flight first, then first tries, oldest
    select(clips.c.id).where(clips.c.state == ClipState.STAGED)
    .where((clips.c.next_attempt_at.is_(None)) | (clips.c.next_attempt_at <= bindparam("t")))
    .order_by(select(func.count()).where(_busy.c.camera == clips.c.camera,
                                         _busy.c.state == ClipState.UPLOADING).scalar_subquery(),
              clips.c.next_attempt_at.is_not(None), clips.c.id)
    .limit(1))


def _count_move(c: Connection, old: ClipState | None, new: ClipState, size: int) -> None:
    """Keep ``state_counts`` in step with one clip moving ``old`` -> ``new`` (``old`` None: a new clip).

    Called in the same transaction as the clip's own update, so the counts commit or roll back with it.
    """
    if old == new:
        return
    moves = [{"s": str(new), "n": 1, "b": size}]
    if old is not None:
        moves.append({"s": str(old), "n": -1, "b": -size})
    c.execute(_BUMP_COUNT, moves)


def _now(now: float | None) -> float:
    return time.time() if now is None else now



class Queue:
    """The queue database at ``path``. Thread-safe: one connection per operation."""

    def __init__(self, path: str | os.PathLike, *, migrate: bool = True):
        self.path = Path(path)
        if migrate:  # (doctor opens without migrating, to report the schema version it finds)
            refuse_foreign(self.path)
        self.engine: Engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            pool_size=8,
            max_overflow=8,
        )

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn, _rec):  # pragma: no cover - exercised by every test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn):  # pragma: no cover
            # Writers take the write lock up front; plain reads (engine.connect()) use a deferred
            # BEGIN, so in WAL mode they neither wait for nor block a writer.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("dockd_write")
                                 else "BEGIN")

        self.writer: Engine = self.engine.execution_options(dockd_write=True)
        if migrate:
            self.migrate()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection's plain ``sqlite3`` connection, for the queries of :mod:`dockd.queue.reads`."""
        with self.engine.connect() as c:
            dbapi = c.connection.driver_connection
            assert isinstance(dbapi, sqlite3.Connection)  # the pysqlite dialect's connection
            yield dbapi

    # -- schema

    def schema_version(self) -> int:
        with self.engine.connect() as c:
            return c.exec_driver_sql("PRAGMA user_version").scalar_one()

    def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied."""
        applied = []
        current = self.schema_version()
        latest = schema.MIGRATIONS[-1][0]
        if current > latest:
            raise SchemaTooNew(self.path, current, latest)
        for version, step in schema.MIGRATIONS:
            if version <= current:
                continue
            with self.writer.begin() as c:
                if c.exec_driver_sql("PRAGMA user_version").scalar_one() >= version:
                    continue  # another process applied it meanwhile
                step(c)
                c.exec_driver_sql(f"PRAGMA user_version = {int(version)}")
            applied.append(version)
        return applied

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.writer.begin() as c:
            yield c

    # -- audit

    def _audit(self, c: Connection, ev: str, *, camera: str | None = None, clip: int | None = None,
               detail: dict | None = None, now: float | None = None) -> int:
        last = c.execute(_LAST_AUDIT).first()
        if last is None:  # an empty log, or (never in practice: compaction appends its own event) all compacted
            last = c.execute(_LAST_CHECKPOINT).first()
        seq, prev = (last.seq + 1, last.hash) if last else (1, chain.GENESIS)
        at = rfc3339(_now(now))
        d = detail or {}
        h = chain.link(prev, chain.content(seq, at, ev, camera, clip, d))
        c.execute(_INSERT_AUDIT, {"seq": seq, "at": at, "event": ev, "camera": camera, "clip": clip,
                                  "detail": chain.detail_text(d),
                                  "prev_hash": prev, "hash": h})
        return seq

    def record(self, ev: str, *, camera: str | None = None, clip: int | None = None,
               detail: dict | None = None, now: float | None = None) -> int:
        """Append a stand-alone audit event (daemon start, dock, skip, ...)."""
        with self.tx() as c:
            return self._audit(c, ev, camera=camera, clip=clip, detail=detail, now=now)

    def audit_rows(self, *, camera: str | None = None, clip: int | None = None, since: str | None = None,
                   after_seq: int = 0) -> list[dict]:
        with self._read() as c:
            return reads.audit_rows(c, camera=camera, clip=clip, since=since, after_seq=after_seq)

    def audit_hashes_at(self, seqs: Iterable[int]) -> dict[int, str]:
        """``{seq: hash}`` of the audit rows at ``seqs`` that exist (looked up 500 at a time)."""
        want, out = sorted(set(seqs)), {}
        with self.engine.connect() as c:
            for i in range(0, len(want), 500):
                q = select(audit_log.c.seq, audit_log.c.hash).where(audit_log.c.seq.in_(want[i:i + 500]))
                out.update({r.seq: r.hash for r in c.execute(q)})
        return out

    def iter_audit(self, *, after_seq: int = 0, page: int = 5000) -> Iterator[dict]:
        """Every audit row after ``after_seq`` in seq order, as dicts with the detail parsed; read as
        :meth:`iter_audit_stored` reads them (keyset pages, constant memory)."""
        for r in self.iter_audit_stored(after_seq=after_seq, page=page):
            yield {"seq": r[0], "at": r[1], "event": r[2], "camera": r[3], "clip": r[4], "detail": _row_detail(r[5]),
                   "prev_hash": r[6], "hash": r[7]}

    def iter_audit_stored(self, *, after_seq: int = 0, page: int = 5000) -> Iterator[tuple]:
        """Every audit row after ``after_seq`` in seq order, as stored: ``(seq, at, event, camera, clip,
        detail text, prev_hash, hash)`` (:func:`dockd.core.audit.first_bad_stored` hashes the text as is).

        Memory stays constant however long the log is: each page is a fresh short read
        (``seq > last seen ORDER BY seq LIMIT page``, a rowid range search) through the plain DB-API
        cursor (SQLAlchemy's row objects cost more than the hashing they feed), so no read transaction
        is held open across the caller's work either."""
        sql = ("SELECT seq, at, event, camera, clip, detail, prev_hash, hash FROM audit "
               "WHERE seq > ? ORDER BY seq LIMIT ?")
        last = after_seq
        while True:
            with self._read() as c:
                rows = c.execute(sql, (last, page)).fetchall()
            yield from rows
            if len(rows) < page:
                return
            last = rows[-1][0]

    def last_event(self, ev: str) -> dict | None:
        """The latest audit row of event ``ev`` (an ix_audit_event search, not a scan), or None."""
        with self.engine.connect() as c:
            r = c.execute(select(audit_log).where(audit_log.c.event == ev)
                          .order_by(audit_log.c.seq.desc()).limit(1)).first()
        return dict(r._mapping, detail=_detail(r.detail)) if r else None

    def last_audit_head(self) -> dict | None:
        with self.engine.connect() as c:
            r = c.execute(select(audit_heads).order_by(audit_heads.c.seq.desc()).limit(1)).first()
        return dict(r._mapping) if r else None

    def audit_head_count(self) -> int:
        with self.engine.connect() as c:
            return c.execute(select(func.count()).select_from(audit_heads)).scalar_one()

    def last_audit(self) -> tuple[int, str]:
        with self.engine.connect() as c:
            r = c.execute(select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)).first()
        return (r.seq, r.hash) if r else (0, chain.GENESIS)

    def add_audit_head(self, seq: int, h: str, at: str, statement: str) -> None:
        with self.tx() as c:
            if not c.execute(select(audit_heads.c.seq).where(audit_heads.c.seq == seq)).first():
                c.execute(insert(audit_heads).values(seq=seq, hash=h, at=at, statement=statement))

    def audit_heads(self) -> list[dict]:
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(select(audit_heads).order_by(audit_heads.c.seq))]

    def iter_audit_heads(self, *, page: int = 1000) -> Iterator[dict]:
        """Every signed head in seq order with ``chain_hash``, the audit row's hash at its seq (None when
        the row is missing), read in keyset pages: constant memory."""
        a = audit_log.alias("a")
        q = (select(audit_heads, a.c.hash.label("chain_hash"))
             .select_from(audit_heads.outerjoin(a, a.c.seq == audit_heads.c.seq))
             .where(audit_heads.c.seq > bindparam("after")).order_by(audit_heads.c.seq).limit(page))
        last = -1
        while True:
            with self.engine.connect() as c:
                batch = [dict(r._mapping) for r in c.execute(q, {"after": last})]
            yield from batch
            if len(batch) < page:
                return
            last = batch[-1]["seq"]

    def audit_export_starting_at(self, seq: int) -> dict | None:
        """The exported day whose segment starts at ``seq``, or None."""
        with self.engine.connect() as c:
            r = c.execute(select(audit_exports).where(audit_exports.c.first_seq == seq)).first()
        return dict(r._mapping) if r else None

    def last_exported_seq(self) -> int:
        with self.engine.connect() as c:
            return c.execute(select(func.coalesce(func.max(audit_exports.c.last_seq), 0))).scalar_one()

    def audit_exported_days(self) -> set[str]:
        with self.engine.connect() as c:
            return {r.day for r in c.execute(select(audit_exports.c.day))}

    def mark_audit_exported(self, day: str, first_seq: int, last_seq: int, key: str, *,
                            now: float | None = None) -> None:
        with self.tx() as c:
            c.execute(insert(audit_exports).values(day=day, first_seq=first_seq, last_seq=last_seq, object_key=key,
                                                   at=_now(now)))
            self._audit(c, "audit.exported", detail={"day": day, "first_seq": first_seq, "last_seq": last_seq,
                                                     "object_key": key}, now=now)

    def last_audit_part(self) -> dict | None:
        """The newest audit part segment storage holds (dockd/station/auditparts.py), or None."""
        with self.engine.connect() as c:
            r = c.execute(select(audit_parts).order_by(audit_parts.c.first_seq.desc()).limit(1)).first()
        return dict(r._mapping) if r else None

    def mark_audit_part(self, day: str, first_seq: int, last_seq: int, last_hash: str, key: str, *,
                        now: float | None = None) -> None:
        """Record a part segment once storage holds it; drop the records of earlier days' parts (the finished
        day's segment replaces them), so the table holds one day's parts at most. No audit row: a row per part
        would itself be new for the next part, which would never run dry."""
        with self.tx() as c:
            c.execute(delete(audit_parts).where(audit_parts.c.day < day))
            c.execute(insert(audit_parts).values(day=day, first_seq=first_seq, last_seq=last_seq, last_hash=last_hash,
                                                 object_key=key, at=_now(now)))

    def audit_checkpoint(self) -> dict | None:
        """The latest compaction checkpoint (the log held here starts after its seq), or None."""
        with self.engine.connect() as c:
            r = c.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq.desc()).limit(1)).first()
        return dict(r._mapping) if r else None

    def audit_checkpoints(self) -> list[dict]:
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq))]

    def compact_audit(self, seq: int, h: str, at: str, statement: str, detail: dict, *,
                      now: float | None = None) -> int:
        """Drop the audit rows up to ``seq`` behind a checkpoint; return how many were deleted.

        One transaction: the row at ``seq`` must still be here with hash ``h`` and the log must start
        right after the previous checkpoint (no gap), the checkpoint ``(seq, h, signed statement)`` is
        stored, the rows ``<= seq`` are deleted and an ``audit.compacted`` event is appended (so the
        log is never empty and chains on from the kept rows). The caller proved first that storage
        holds those rows (:mod:`dockd.retention`)."""
        with self.tx() as c:
            row = c.execute(select(audit_log.c.hash).where(audit_log.c.seq == seq)).first()
            if row is None or row.hash != h:
                raise UsageError(f"audit row {seq} is not here with hash {h}: not compacted")
            prev = c.execute(_LAST_CHECKPOINT).first()
            first = c.execute(select(func.min(audit_log.c.seq))).scalar_one()
            if first != (prev.seq + 1 if prev else 1):
                raise UsageError(f"the audit log here starts at seq {first}, not after the last checkpoint: "
                                 "not compacted")
            c.execute(insert(audit_checkpoints).values(seq=seq, hash=h, at=at, statement=statement))
            n = c.execute(audit_log.delete().where(audit_log.c.seq <= seq)).rowcount
            self._audit(c, "audit.compacted", detail=dict(detail, seq=seq, hash=h, rows=n), now=now)
            return n

    def verify_audit(self, *, after_head: tuple[int, str] | None = None) -> tuple[int, tuple[int, str] | None]:
        """Recompute the chain: ``(rows checked, first bad (seq, reason) or None)``.

        From the retention checkpoint if there is one (compacted rows are proven from storage), else from
        the start; with ``after_head=(seq, hash)`` only the rows after that (already checked) row.
        Streams the rows (:meth:`iter_audit`), so memory does not grow with the log."""
        seen, last_seen = [0], [after_head[0] if after_head else 0]

        def rows() -> Iterator[tuple]:
            for r in self.iter_audit_stored(after_seq=last_seen[0]):
                seen[0] += 1
                last_seen[0] = r[0]
                yield r

        cp = self.audit_checkpoint()
        if after_head is not None:
            start_prev, start_seq = after_head[1], after_head[0] + 1
        elif cp:
            start_prev, start_seq = cp["hash"], cp["seq"] + 1
        else:
            start_prev, start_seq = chain.GENESIS, 1
        bad = chain.first_bad_stored(rows(), _row_detail, start_prev=start_prev, start_seq=start_seq)
        n = seen[0]
        if bad is not None:  # the rows after the break count as rows of the log, as before
            with self.engine.connect() as c:
                n += c.execute(select(func.count()).select_from(audit_log)
                               .where(audit_log.c.seq > last_seen[0])).scalar_one()
        return n, bad

    # -- cameras

    def dock_camera(self, serial: str, *, source: str, vendor: str | None = None, model: str | None = None,
                    profile: str | None = None, bay: str | None = None, now: float | None = None,
                    record: bool = True) -> None:
        """A camera docked: its row (state ``docked``, ``docked_at`` = now) and, with ``record``, the
        ``camera.docked`` audit event. The daemon passes ``record=False``: its camera worker records the
        event with the dock's facts once the card's inventory is known (:meth:`record_dock`)."""
        t = _now(now)
        with self.tx() as c:
            exists = c.execute(select(cameras.c.serial).where(cameras.c.serial == serial)).first()
            vals = dict(vendor=vendor, model=model, profile=profile, bay=bay, source=source, state=CameraState.DOCKED,
                        reason=None, docked=1, docked_at=t, updated_at=t)
            if exists:
                c.execute(update(cameras).where(cameras.c.serial == serial).values(**vals))
            else:
                c.execute(insert(cameras).values(serial=serial, **vals))
            if not record:
                return
            self._audit(c, "camera.docked", camera=serial,
                        detail={"source": source, "bay": bay, "vendor": vendor, "model": model, "profile": profile},
                        now=t)

    def set_camera_state(self, serial: str, state: str, reason: str | None = None, *, docked: bool | None = None,
                         now: float | None = None) -> bool:
        """Set a camera's state; audit and return True only if it changed."""
        t = _now(now)
        with self.tx() as c:
            row = c.execute(select(cameras).where(cameras.c.serial == serial)).first()
            if row is None:
                raise NotFound("camera", serial)
            vals: dict[str, Any] = dict(state=state, reason=reason, updated_at=t)
            if docked is not None:
                vals["docked"] = int(docked)
            if row.state == state and row.reason == reason and (docked is None or row.docked == int(docked)):
                return False
            c.execute(update(cameras).where(cameras.c.serial == serial).values(**vals))
            ev = "camera.undocked" if state == CameraState.UNDOCKED else "camera.state"
            self._audit(c, ev, camera=serial, detail={"from": row.state, "to": state, "reason": reason}, now=t)
            return True

    def camera(self, serial: str) -> Camera | None:
        with self._read() as c:
            return reads.camera(c, serial)

    def cameras(self) -> list[Camera]:
        with self._read() as c:
            return reads.cameras(c)

    def camera_counts(self, serial: str) -> dict[str, int]:
        """Clip counts by state for the clips of a camera that are still on it (not wiped)."""
        with self.engine.connect() as c:
            q = (select(clips.c.state, func.count()).where(clips.c.camera == serial)
                 .where(clips.c.state.in_(_ON_CAMERA)).group_by(clips.c.state))
            return {s: n for s, n in c.execute(q)}

    def camera_progress(self, serial: str) -> dict[str, dict[str, int]]:
        """See :func:`dockd.queue.reads.camera_progress`."""
        with self._read() as c:
            return reads.camera_progress(c, serial)

    # -- continuity (schema v3): one row per camera, one per dock; never a camera's clip history

    def camera_facts(self, serial: str) -> dict | None:
        """See :func:`dockd.queue.reads.camera_facts`."""
        with self._read() as c:
            return reads.camera_facts(c, serial)

    def all_camera_facts(self) -> dict[str, dict]:
        """See :func:`dockd.queue.reads.all_camera_facts`."""
        with self._read() as c:
            return reads.all_camera_facts(c)

    def device_id_claimed_by(self, device_id: str, *, limit: int = 16) -> list[str]:
        """Serials of cameras recorded with ``device_id`` (an ix_camera_facts_device_id search; at most ``limit``)."""
        with self.engine.connect() as c:
            return [r.serial for r in c.execute(select(camera_facts.c.serial).where(
                camera_facts.c.device_id == device_id).order_by(camera_facts.c.serial).limit(limit))]

    def seen_before(self, camera: str, found: list[tuple[str, int, int]], before: float) -> set[tuple[str, int, int]]:
        """The ``(path, size, mtime_ns)`` identities of ``found`` the queue already held before ``before``
        (first seen at an earlier dock): one uq_clip_identity search per file, as discover_many."""
        out = set()
        with self.engine.connect() as c:
            for path, size, mtime_ns in dict.fromkeys(found):
                r = c.execute(_CLIP_BY_IDENTITY, {"cam": camera, "path": path, "size": size, "mtime": mtime_ns}).first()
                if r is not None and r.created_at < before:
                    out.add((path, size, mtime_ns))
        return out

    def dock_recorded(self, serial: str, docked_at: float) -> bool:
        with self.engine.connect() as c:
            return c.execute(select(camera_docks.c.id).where(camera_docks.c.camera == serial,
                                                             camera_docks.c.docked_at == docked_at)).first() is not None

    def record_dock(self, serial: str, docked_at: float, detail: dict, *, facts: dict | None = None,
                    anomalies: Sequence[dict] = (), now: float | None = None) -> bool:
        """Record one dock of ``serial`` (the one that docked at ``docked_at``), once; True if recorded now.

        One transaction: the dock row (``detail`` = the ``camera.docked`` audit detail), the camera's
        knowledge updated with ``facts`` (columns of ``camera_facts``; None: only the dock is counted),
        the per-kind anomaly counts, the ``camera.docked`` event and one ``camera.anomaly`` event per
        anomaly (detail ``{"kind", "camera", "docked_at", ...facts}``). A second call for the same dock
        (a second pass of the camera worker, the fall-back record after a failure) changes nothing."""
        t = _now(now)
        body = json.dumps(detail, sort_keys=True, ensure_ascii=False)
        with self.tx() as c:
            if c.execute(select(camera_docks.c.id).where(camera_docks.c.camera == serial,
                                                         camera_docks.c.docked_at == docked_at)).first():
                return False
            c.execute(insert(camera_docks).values(camera=serial, docked_at=docked_at, detail=body))
            old = c.execute(select(camera_facts).where(camera_facts.c.serial == serial)).first()
            vals = dict(facts or {}, updated_at=t, docks=(old.docks if old else 0) + 1,
                        anomalies_total=(old.anomalies_total if old else 0) + len(anomalies))
            if facts is not None:
                vals["open_anomalies"] = len(anomalies)
            if old:
                c.execute(update(camera_facts).where(camera_facts.c.serial == serial).values(**vals))
            else:
                c.execute(insert(camera_facts).values(serial=serial, **{"open_anomalies": 0, **vals}))
            kinds: dict[str, int] = {}
            for a in anomalies:
                kinds[str(a["kind"])] = kinds.get(str(a["kind"]), 0) + 1
            for k, n in sorted(kinds.items()):
                ins = sqlite_insert(anomaly_counts).values(kind=k, n=n)
                c.execute(ins.on_conflict_do_update(index_elements=["kind"], set_={"n": anomaly_counts.c.n + n}))
            self._audit(c, "camera.docked", camera=serial, detail=detail, now=t)
            for a in anomalies:
                self._audit(c, "camera.anomaly", camera=serial,
                            detail={**a, "camera": serial, "docked_at": detail.get("docked_at")}, now=t)
            return True

    def camera_docks(self, serial: str, *, limit: int = 20) -> list[dict]:
        """See :func:`dockd.queue.reads.camera_docks`."""
        with self._read() as c:
            return reads.camera_docks(c, serial, limit=limit)

    def anomaly_counts(self) -> dict[str, int]:
        """Anomalies reported so far, per kind (the Prometheus counter)."""
        with self.engine.connect() as c:
            return {r.kind: r.n for r in c.execute(select(anomaly_counts))}

    # -- clips

    def discover(self, camera: str, path: str, size: int, mtime_ns: int, *,
                 now: float | None = None) -> tuple[Clip, bool]:
        """Return the clip with this identity, creating it (``discovered``) if new."""
        t = _now(now)
        ident = (clips.c.camera == camera, clips.c.path == path, clips.c.size == size, clips.c.mtime_ns == mtime_ns)
        with self.tx() as c:
            r = c.execute(select(clips).where(*ident)).first()
            if r:
                return Clip.from_row(r), False
            cid = self._insert_discovered(c, camera, path, size, mtime_ns, t)
            return Clip.from_row(c.execute(_CLIP_BY_ID, {"cid": cid}).one()), True

    def _insert_discovered(self, c: Connection, camera: str, path: str, size: int, mtime_ns: int, t: float) -> int:
        """A new ``discovered`` clip with its audit event; returns its id."""
        pk = c.execute(insert(clips).values(camera=camera, path=path, size=size, mtime_ns=mtime_ns,
                                            state=ClipState.DISCOVERED, attempts=0, created_at=t,
                                            updated_at=t)).inserted_primary_key
        assert pk is not None  # an INSERT into a table with an integer primary key
        cid = pk[0]
        _count_move(c, None, ClipState.DISCOVERED, size)
        self._audit(c, "clip.discovered", camera=camera, clip=cid,
                    detail={"path": path, "size": size, "mtime": rfc3339_ns(mtime_ns)}, now=t)
        return cid

    def discover_many(self, camera: str, found: list[tuple[str, int, int]], *,
                      now: float | None = None) -> dict[tuple[str, int, int], Clip]:
        """:meth:`discover` for every ``(path, size, mtime_ns)`` of one scan, in one transaction.

        Returns each identity's clip (new ones ``discovered``, each with its audit event)."""
        t = _now(now)
        out = {}
        with self.tx() as c:
            # One identity search (uq_clip_identity) per file found: the cost is what is on the camera
            # now, never the camera's history of wiped clips.
            for path, size, mtime_ns in dict.fromkeys(found):
                args = {"cam": camera, "path": path, "size": size, "mtime": mtime_ns}
                r = c.execute(_CLIP_BY_IDENTITY, args).first()
                if r is None:
                    self._insert_discovered(c, camera, path, size, mtime_ns, t)
                    r = c.execute(_CLIP_BY_IDENTITY, args).one()
                out[(path, size, mtime_ns)] = Clip.from_row(r)
            return out

    def clip(self, clip_id: int) -> Clip:
        with self._read() as c:
            return reads.clip(c, clip_id)

    def clips(self, *, state: str | Sequence[str] | None = None, camera: str | None = None, limit: int | None = None,
              ids: list[int] | None = None) -> list[Clip]:
        with self._read() as c:
            return reads.clips(c, state=state, camera=camera, limit=limit, ids=ids)

    def counts(self) -> dict[str, int]:
        """Clips per state (every :class:`ClipState`, 0 if none), from ``state_counts``: no scan of clips."""
        return {s: n for s, (n, _b) in self.counts_and_bytes().items()}

    def counts_and_bytes(self) -> dict[str, tuple[int, int]]:
        """Per state: (clips, bytes), from the ``state_counts`` summary kept with every state change."""
        with self._read() as c:
            return reads.counts_and_bytes(c)

    def recount(self) -> dict[str, tuple[int, int]]:
        """Per state (clips, bytes) counted over every clip row: the full scan ``state_counts`` saves.

        For checks (tests, ``doctor``): it must always equal :meth:`counts_and_bytes`."""
        with self.engine.connect() as c:
            got = {s: (n, b or 0) for s, n, b in c.execute(
                select(clips.c.state, func.count(), func.sum(clips.c.size)).group_by(clips.c.state))}
        return {str(s): got.get(str(s), (0, 0)) for s in ClipState}

    def oldest_pending(self) -> float | None:
        """See :func:`dockd.queue.reads.oldest_pending`."""
        with self._read() as c:
            return reads.oldest_pending(c)

    def transition(self, clip_id: int, ev: ClipEvent, *, expect: ClipState | None = None, detail: dict | None = None,
                   now: float | None = None, sidecar_rows: list[dict] | None = None, **values: Any) -> Clip:
        """Move a clip by ``ev``, set ``values``, append the audit event, commit. Raises IllegalTransition.

        ``sidecar_rows``, if given, replace the clip's sidecars in the same transaction."""
        with self.tx() as c:
            return self._transition(c, clip_id, ev, expect=expect, detail=detail, now=now,
                                    sidecar_rows=sidecar_rows, **values)

    def transition_many(self, moves: list[tuple[int, ClipEvent, dict[str, Any]]]) -> list[Clip]:
        """Several :meth:`transition` calls (clip id, event, keyword arguments) in one transaction: all
        committed together (one fsync of the log) or none; in order, so the audit rows follow the list."""
        with self.tx() as c:
            return [self._transition(c, cid, ev, **kw) for cid, ev, kw in moves]

    def _transition(self, c: Connection, clip_id: int, ev: ClipEvent, *, expect: ClipState | None = None,
                    detail: dict | None = None, now: float | None = None, sidecar_rows: list[dict] | None = None,
                    **values: Any) -> Clip:
        """:meth:`transition` inside the caller's write transaction ``c`` (which commits it)."""
        t = _now(now)
        r = c.execute(_CLIP_BY_ID, {"cid": clip_id}).first()
        if r is None:
            raise NotFound("clip", clip_id)
        cur = ClipState(r.state)
        if expect is not None and cur is not expect:
            raise IllegalTransition(clip_id, cur, ev)
        new = next_state(clip_id, cur, ev)
        stamp = {ClipState.STAGED: "staged_at", ClipState.UPLOADED: "uploaded_at", ClipState.WIPED: "wiped_at"}
        vals = dict(values, state=new, updated_at=t)
        if new in stamp and ev not in (ClipEvent.UPLOAD_RETRY, ClipEvent.REPLAY, ClipEvent.WIPE_ABORTED):
            vals[stamp[new]] = t
        if new is not ClipState.UPLOADING:
            vals.setdefault("lease_owner", None)
            vals.setdefault("lease_expires", None)
        row = c.execute(update(clips).where(clips.c.id == clip_id).values(**vals).returning(*clips.c)).one()
        _count_move(c, cur, new, r.size)
        if sidecar_rows is not None:
            self._set_sidecars(c, clip_id, sidecar_rows)
        d = {"from": str(cur), "to": str(new)}
        d.update(detail or {})
        self._audit(c, f"clip.{ev}", camera=r.camera, clip=clip_id, detail=d, now=t)
        return Clip.from_row(row)

    def update_clip(self, clip_id: int, **values: Any) -> None:
        """Bookkeeping that is not a state change (multipart upload id, pruned staged copy).

        Refuses the lifecycle's columns (``state``, its time stamps, the lease, ``id``): those change
        only through :meth:`transition`, with the audit row, so this cannot bypass the lifecycle."""
        refused = sorted(set(values) & LIFECYCLE_COLUMNS)
        if refused:
            raise ValueError(f"update_clip cannot set {', '.join(refused)}: state changes go through transition()")
        with self.tx() as c:
            c.execute(update(clips).where(clips.c.id == clip_id).values(**values))

    def claim_upload(self, owner: str, *, lease_s: float, now: float | None = None) -> Clip | None:
        """Atomically take the next due ``staged`` clip: ``uploading`` with a lease held by ``owner``.

        Fair between bays: the clip chosen is from the camera with the fewest clips
        already uploading, so one camera's long queue never starves another's; then
        first-time uploads before retries, then oldest first.
        """
        t = _now(now)
        with self.tx() as c:
            r = c.execute(_NEXT_DUE_UPLOAD, {"t": t}).first()
            if r is None:
                return None
            return self._transition(c, r.id, ClipEvent.UPLOAD_STARTED, expect=ClipState.STAGED, now=t,
                                    detail={"owner": owner}, lease_owner=owner, lease_expires=t + lease_s)

    def renew_lease(self, clip_id: int, owner: str, *, lease_s: float, now: float | None = None) -> bool:
        t = _now(now)
        with self.tx() as c:
            res = c.execute(update(clips).where(clips.c.id == clip_id, clips.c.lease_owner == owner,
                                                clips.c.state == ClipState.UPLOADING)
                            .values(lease_expires=t + lease_s))
            return res.rowcount == 1

    def release_leases(self, *, expired_before: float | None = None, now: float | None = None) -> list[int]:
        """Put ``uploading`` clips whose lease expired (or all, at start-up) back to ``staged``."""
        t = _now(now)
        with self.engine.connect() as c:  # every tick: statements built once (building costs more than running)
            ids = [r.id for r in (c.execute(_UPLOADING) if expired_before is None
                                  else c.execute(_UPLOADING_EXPIRED, {"t": expired_before}))]
        done = []
        for cid in ids:
            try:
                # last_error marks the clip as tried: its next upload looks for the object first
                self.transition(cid, ClipEvent.UPLOAD_RETRY, expect=ClipState.UPLOADING,
                                last_error="upload interrupted (daemon stopped or lease expired)",
                                detail={"reason": "lease released"}, now=t)
                done.append(cid)
            except IllegalTransition:
                pass
        return done

    # -- sidecars, parts, skips, alarms

    def set_sidecars(self, clip_id: int, items: list[dict]) -> None:
        with self.tx() as c:
            self._set_sidecars(c, clip_id, items)

    @staticmethod
    def _set_sidecars(c: Connection, clip_id: int, items: list[dict]) -> None:
        c.execute(sidecars.delete().where(sidecars.c.clip_id == clip_id))
        for it in items:
            c.execute(insert(sidecars).values(clip_id=clip_id, **it))

    def sidecars(self, clip_id: int) -> list[dict]:
        with self._read() as c:
            return reads.sidecars(c, clip_id)

    def mark_sidecar_wiped(self, clip_id: int, path: str, now: float | None = None) -> None:
        with self.tx() as c:
            c.execute(update(sidecars).where(sidecars.c.clip_id == clip_id, sidecars.c.path == path)
                      .values(wiped_at=_now(now)))

    def record_part(self, clip_id: int, upload_id: str, part_number: int, size: int, sha256_b64: str,
                    etag: str) -> None:
        with self.tx() as c:
            c.execute(parts.delete().where(parts.c.clip_id == clip_id, parts.c.upload_id == upload_id,
                                           parts.c.part_number == part_number))
            c.execute(insert(parts).values(clip_id=clip_id, upload_id=upload_id, part_number=part_number, size=size,
                                           sha256_b64=sha256_b64, etag=etag))

    def parts(self, clip_id: int, upload_id: str) -> list[dict]:
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(
                select(parts).where(parts.c.clip_id == clip_id, parts.c.upload_id == upload_id)
                .order_by(parts.c.part_number))]

    def clear_parts(self, clip_id: int) -> None:
        with self.tx() as c:
            c.execute(parts.delete().where(parts.c.clip_id == clip_id))

    def clips_to_prune(self, before: float, *, limit: int = 500) -> list[Clip]:
        """Up to ``limit`` clips storage holds (uploaded/wiped) whose staged copy is still here and that
        were uploaded before ``before``, oldest first. Reads only rows with a staged copy (ix_clips_staged)."""
        with self.engine.connect() as c:
            return [Clip.from_row(r) for r in c.execute(_TO_PRUNE, {"before": before, "n": limit})]

    def clips_with_staged_copy(self, states: list[ClipState]) -> list[Clip]:
        """Clips in ``states`` that still have a staged copy (ix_clips_staged: never the pruned history)."""
        q = (select(clips).where(clips.c.staged_path.is_not(None), _NOT_INDEXED_STATE.in_(states))
             .order_by(clips.c.uploaded_at, clips.c.id))  # the order of ix_clips_staged: a walk of it
        with self.engine.connect() as c:
            return [Clip.from_row(r) for r in c.execute(q)]

    def known_upload_ids(self) -> set[str]:
        with self.engine.connect() as c:
            return {r[0] for r in c.execute(select(clips.c.upload_id).where(clips.c.upload_id.is_not(None)))}

    def add_skip(self, camera: str, path: str, reason: str, *, now: float | None = None) -> bool:
        """Record a skipped camera entry once (audit event the first time); True if new."""
        t = _now(now)
        with self.tx() as c:
            if c.execute(select(skips.c.id).where(skips.c.camera == camera, skips.c.path == path,
                                                  skips.c.reason == reason)).first():
                return False
            c.execute(insert(skips).values(camera=camera, path=path, reason=reason, at=t))
            self._audit(c, "entry.skipped", camera=camera, detail={"path": path, "reason": reason}, now=t)
            return True

    def skips(self, camera: str | None = None) -> list[dict]:
        with self._read() as c:
            return reads.skips(c, camera)

    def raise_alarm(self, kind: str, message: str, *, now: float | None = None) -> None:
        t = _now(now)
        with self.tx() as c:
            old = c.execute(select(alarms).where(alarms.c.kind == kind)).first()
            if old and old.message == message:
                return
            c.execute(alarms.delete().where(alarms.c.kind == kind))
            c.execute(insert(alarms).values(kind=kind, message=message, at=t))
            self._audit(c, "alarm.raised", detail={"kind": kind, "message": message}, now=t)

    def clear_alarm(self, kind: str, *, now: float | None = None) -> None:
        with self.engine.connect() as c:  # the common case (no such alarm) takes no write lock
            if c.execute(select(alarms.c.kind).where(alarms.c.kind == kind)).first() is None:
                return
        with self.tx() as c:
            if c.execute(alarms.delete().where(alarms.c.kind == kind)).rowcount:
                self._audit(c, "alarm.cleared", detail={"kind": kind}, now=now)

    def alarms(self) -> list[dict]:
        with self._read() as c:
            return reads.alarms(c)
