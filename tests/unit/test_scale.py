"""A station with years of history behaves like a new one (issue #12 part 1).

* schema v2 from a v1 database: ``state_counts`` starts equal to a count over the clips;
* ``state_counts`` stays equal to that count through every kind of state change, and rolls back with it;
* every statement of the hot paths (status, metrics, daemon start-up and tick, ``queue --limit``,
  ``show``, the writes of the clip lifecycle, the audit stream) is planned by SQLite as an index
  search, never a full scan of ``clips`` or ``audit`` (``EXPLAIN QUERY PLAN``);
* staging pruning takes a bounded batch of due clips only; the audit stream pages in seq order.
"""

from __future__ import annotations

import re
import sqlite3

import pytest
from sqlalchemy import event

from dockd.core.errors import IllegalTransition
from dockd.core.lifecycle import ClipEvent, ClipState
from dockd.queue import reads, schema, sourcechecks
from dockd.queue.store import Queue
from dockd.station.metrics import QueueCollector

E, S = ClipEvent, ClipState
T0 = 1_700_000_000.0


def history(q: Queue, n_wiped: int, *, cameras=("CAM1", "CAM2"), now: float = T0) -> None:
    """``n_wiped`` clips through the whole path (staged copy pruned), then one clip in every other state."""
    for cam in cameras:
        if q.camera(cam) is None:
            q.dock_camera(cam, source="import", now=now - 1000)
    with q.tx() as c:
        for i in range(n_wiped):
            cam = cameras[i % len(cameras)]
            cid = q._insert_discovered(c, cam, f"DCIM/OLD{i:06d}.MP4", 1000 + i, 1_600_000_000_000_000_000 + i,
                                       now - 900)
            q._transition(c, cid, E.COPY_STARTED, now=now - 900)
            q._transition(c, cid, E.STAGED, sha256=f"{i:064x}", staged_path=f"/s/{cid}.clip", now=now - 900)
            q._transition(c, cid, E.UPLOAD_STARTED, now=now - 900)
            q._transition(c, cid, E.UPLOADED, now=now - 900)
            q._transition(c, cid, E.WIPE_STARTED, now=now - 900)
            q._transition(c, cid, E.WIPED, now=now - 900, staged_path=None)
    # one clip in each state still in flight
    path = iter(f"DCIM/NEW{i}.MP4" for i in range(100))

    def clip(*events, **last):
        c, _ = q.discover(cameras[0], next(path), 10, 1, now=now)
        for ev in events:
            c = q.transition(c.id, ev, now=now, **(last if ev is events[-1] else {}))
        return c.id

    clip()
    clip(E.COPY_STARTED)
    clip(E.COPY_STARTED, E.STAGED, staged_path="/s/a.clip", sha256="aa" * 32)
    clip(E.COPY_STARTED, E.STAGED, E.UPLOAD_STARTED, staged_path="/s/b.clip", sha256="bb" * 32)
    clip(E.COPY_STARTED, E.STAGED, E.UPLOAD_STARTED, E.UPLOADED, staged_path="/s/c.clip", sha256="cc" * 32)
    clip(E.COPY_STARTED, E.STAGED, E.UPLOAD_STARTED, E.UPLOAD_FAILED, staged_path="/s/d.clip", sha256="dd" * 32)
    clip(E.QUARANTINE)


@pytest.fixture
def q(tmp_path):
    qu = Queue(tmp_path / "queue.db")
    yield qu
    qu.close()


# ------------------------------------------------------------------ schema v2 and state_counts


def test_v2_migration_from_a_v1_database_counts_the_existing_clips(tmp_path, monkeypatch):
    path = tmp_path / "queue.db"
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", [schema.MIGRATIONS[0]])  # the station as it was before v2
        old = Queue(path)
        assert old.schema_version() == 1
        old.close()
    con = sqlite3.connect(path)  # rows as the v1 code wrote them
    con.execute("INSERT INTO cameras (serial, state, docked, updated_at) VALUES ('CAM1', 'ready', 0, 0)")
    assert not con.execute("SELECT name FROM sqlite_master WHERE name = 'state_counts'").fetchall()
    rows = [("wiped", 1000 + i) for i in range(30)] + [("staged", 10), ("failed", 10), ("copying", 10)]
    con.executemany("INSERT INTO clips (camera, path, size, mtime_ns, state, attempts, created_at, updated_at) "
                    "VALUES ('CAM1', ?, ?, 1, ?, 0, 0, 0)", [(f"P{i}", sz, st) for i, (st, sz) in enumerate(rows)])
    con.commit()
    con.close()

    q = Queue(path)  # upgrades in place, through v2 and every later step
    try:
        assert q.schema_version() == schema.SCHEMA_VERSION  # v2 and every later step
        assert q.counts_and_bytes() == q.recount()
        assert q.counts()["wiped"] == 30 and q.counts()["failed"] == 1
        assert q.counts_and_bytes()["wiped"] == (30, sum(1000 + i for i in range(30)))
        names = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"ix_clips_progress", "ix_clips_staged", "ix_clips_upload_id", "ix_audit_event"} <= names
        # and it keeps counting after the upgrade
        c, _ = q.discover("CAM1", "DCIM/AFTER.MP4", 77, 1)
        q.transition(c.id, E.COPY_STARTED)
        assert q.counts_and_bytes() == q.recount()
        assert q.counts_and_bytes()["copying"] == (2, 10 + 77)
        assert q.counts_and_bytes()["discovered"] == (0, 0)
    finally:
        q.close()


def test_state_counts_follow_every_state_change_and_roll_back_with_it(q):
    history(q, 5)
    assert q.counts_and_bytes() == q.recount()
    staged = q.clips(state=S.STAGED)[0]
    got = q.claim_upload("w1", lease_s=60, now=T0)
    assert got is not None and got.id == staged.id
    assert q.counts_and_bytes() == q.recount()
    q.release_leases(now=T0)  # uploading -> staged through transition()
    assert q.counts_and_bytes() == q.recount()
    failed = q.clips(state=S.FAILED)[0]
    q.transition(failed.id, E.REPLAY, now=T0)
    assert q.counts_and_bytes() == q.recount()
    before = q.counts_and_bytes()
    with pytest.raises(IllegalTransition):  # an illegal move commits nothing, counts included
        q.transition(failed.id, E.WIPED, now=T0)
    with pytest.raises(RuntimeError):  # a transaction that fails after the move rolls the count back too
        with q.tx() as c:
            q._transition(c, failed.id, E.UPLOAD_STARTED, now=T0)
            raise RuntimeError("crash before commit")
    assert q.counts_and_bytes() == before == q.recount()


def test_counts_cover_every_lifecycle_state(q):
    # derived from ClipState: a state added to the lifecycle is counted (0 until a clip reaches it)
    assert set(q.counts()) == {str(s) for s in ClipState}
    assert set(q.counts_and_bytes()) == {str(s) for s in ClipState}


def test_camera_progress_counts_only_the_current_dock(q):
    history(q, 20, cameras=("CAM1",))
    q.dock_camera("CAM1", source="import", now=T0 - 10)  # a new dock after the old clips were wiped
    p = q.camera_progress("CAM1")
    # the 7 clips from NEW*: the old 20 wiped ones belong to earlier docks
    assert p["found"]["clips"] == 7 and p["wiped"]["clips"] == 0
    assert p["staged"]["clips"] == 4 and p["uploaded"]["clips"] == 1
    c = q.clips(state=S.UPLOADED)[0]
    q.transition(c.id, E.WIPE_STARTED, now=T0)
    assert q.camera_progress("CAM1")["wiped"]["clips"] == 0  # an intent is not a wipe
    q.transition(c.id, E.WIPED, now=T0)
    p = q.camera_progress("CAM1")
    assert p["wiped"] == {"clips": 1, "bytes": 10} and p["found"]["clips"] == 7


# ------------------------------------------------------------------ query plans of the hot paths


class Recorder:
    """Every statement a Queue runs (with its parameters) while recording."""

    def __init__(self, q: Queue):
        self.q, self.seen = q, []

        @event.listens_for(q.engine, "before_cursor_execute")
        def _rec(conn, cursor, statement, parameters, context, executemany):
            if self.on and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT")):
                self.seen.append((statement, parameters[0] if executemany else parameters))

        self.on = False

    def _read(self, conn, sql, args=()):  # the plain-sqlite3 reads (dockd.queue.reads) go around SQLAlchemy
        if self.on:
            self.seen.append((sql, tuple(args)))
        return self._orig(conn, sql, args)

    def __enter__(self):
        self.on = True
        self._orig = reads._execute
        reads._execute = self._read
        return self

    def __exit__(self, *exc):
        self.on = False
        reads._execute = self._orig


# A SCAN of these tables reads history. The only exceptions: a statement that walks the rowid in
# order and stops at a LIMIT without any filter (the last audit row; `queue --limit N`).
BIG = ("clips", "audit", "busy", "a")
BOUNDED = re.compile(r"^SELECT .* FROM (clips|audit) ORDER BY (\1\.)?(id|seq)( DESC)?\s+LIMIT \?( OFFSET \?)?$", re.S)


def full_scans(q: Queue, recorded) -> list[str]:
    bad = []
    con = sqlite3.connect(q.path)
    try:
        # a walk of a partial index reads only the rows in flight it holds (e.g. clips with a staged copy)
        partial = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                             "AND sql LIKE '% WHERE %'")}
        for sql, params in recorded:
            plan = [r[3] for r in con.execute("EXPLAIN QUERY PLAN " + sql, params)]
            for line in plan:
                m = re.match(r"SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?", line)
                if m and m.group(2) in partial:
                    continue
                if m and m.group(1) in BIG and not BOUNDED.match(" ".join(sql.split())):
                    bad.append(f"{line}  <-  {' '.join(sql.split())[:300]}")
    finally:
        con.close()
    return bad


def hot_paths(q: Queue, tmp_path) -> Recorder:
    """Run what the daemon and the CLI do on every status, scrape, start, tick and clip; record it."""
    for cam in ("CAM1", "CAM2"):  # docked again after the old clips were wiped
        q.dock_camera(cam, source="import", now=T0)
    last = q.last_audit()[0]
    q.mark_audit_exported("2023-11-13", 1, last, "k", now=T0)  # the log so far left the station
    rec = Recorder(q)
    with rec:
        # dockd status (render.status_dict) and the daemon's status line
        for cam in q.cameras():
            q.camera_progress(cam.serial)
            q.skips(cam.serial)
        q.counts(), q.oldest_pending(), q.alarms()
        # GET /metrics
        list(QueueCollector(q, tmp_path).collect())
        # daemon start-up: previous start, recovery, leases, multipart uploads known
        q.last_event("daemon.started")
        q.clips(state=S.COPYING)
        q.clips_with_staged_copy([S.STAGED, S.UPLOADING, S.UPLOADED, S.FAILED, S.WIPED, S.QUARANTINED])
        q.clips(state=[S.STAGED, S.UPLOADING, S.FAILED])
        q.release_leases(now=T0)
        q.known_upload_ids()
        # daemon tick: expired leases, staging pruning, audit head and export, camera worker
        q.release_leases(expired_before=T0, now=T0)
        q.clips_to_prune(T0)
        q.last_audit_head(), q.last_audit()
        q.audit_exported_days()
        list(q.iter_audit(after_seq=q.last_exported_seq()))
        q.clips(camera="CAM1", state=S.UPLOADED)
        q.camera_counts("CAM1")
        # dockd queue --limit 50, dockd show ID
        q.clips(limit=50)
        cid = q.clips(state=S.UPLOADED)[0].id
        q.clip(cid), q.sidecars(cid), q.audit_rows(clip=cid)
        # camera worker with wipe_check = "hash": clips to verify ahead, proven clips to wipe, a clip's proofs
        sourcechecks.unverified(q, "CAM1", T0), sourcechecks.proven_uploaded(q, "CAM1", T0)
        sourcechecks.proofs(q, cid), sourcechecks.drop(q, cid)
        # the writes of the clip lifecycle
        found = q.discover_many("CAM2", [("DCIM/X.MP4", 5, 5), ("DCIM/OLD000001.MP4", 1001, 1_600_000_000_000_000_001)])
        x = found[("DCIM/X.MP4", 5, 5)]
        q.transition(x.id, E.COPY_STARTED, now=T0)
        q.transition(x.id, E.STAGED, staged_path="/s/x.clip", sha256="ee" * 32, now=T0)
        q.claim_upload("w", lease_s=60, now=T0)
        q.record("daemon.started", detail={})
    return rec


def test_hot_statements_never_scan_clips_or_audit(q, tmp_path):
    history(q, 200)
    rec = hot_paths(q, tmp_path)
    statements = {s for s, _ in rec.seen}
    assert len(statements) > 25  # the recorder saw the hot paths' statements
    assert full_scans(q, rec.seen) == []


def test_the_plan_check_catches_a_full_scan(q):
    history(q, 10)
    assert full_scans(q, [("SELECT id FROM clips WHERE last_error = ?", ("x",))])
    assert full_scans(q, [("SELECT seq FROM audit WHERE event LIKE ?", ("%x",))])
    assert not full_scans(q, [("SELECT seq FROM audit ORDER BY audit.seq DESC LIMIT ?", (1,))])


def vm_steps(path, recorded) -> list[int]:
    """SQLite virtual-machine steps (in units of 10) each recorded read statement takes on ``path``."""
    con = sqlite3.connect(path)
    steps = [0]

    def tick():
        steps[0] += 1
        return 0

    con.set_progress_handler(tick, 10)
    out = []
    try:
        for sql, params in recorded:
            if sql.lstrip().upper().startswith("SELECT"):
                steps[0] = 0
                con.execute(sql, params).fetchall()
                out.append(steps[0])
    finally:
        con.close()
    return out


def test_hot_path_work_does_not_grow_with_history(tmp_path):
    """The same hot paths on 50 and on 2,000 wiped clips of history take about the same SQLite work.

    An index search can still read every row of a big equal range (``state = 'wiped'``), which
    EXPLAIN calls a SEARCH: counting the VM steps catches that too."""
    runs = []
    for n in (50, 2000):
        d = tmp_path / str(n)
        d.mkdir()
        q = Queue(d / "queue.db")
        try:
            history(q, n)
            runs.append((hot_paths(q, d).seen, q.path))
        finally:
            q.close()
    (small_rec, small_db), (big_rec, big_db) = runs
    assert [s for s, _ in small_rec] == [s for s, _ in big_rec]
    small, big = vm_steps(small_db, small_rec), vm_steps(big_db, big_rec)
    assert len(small) == len(big) > 20
    grew = [(" ".join(sql.split())[-250:], a, b)
            for (sql, _), a, b in zip([r for r in big_rec if r[0].lstrip().upper().startswith("SELECT")], small, big,
                                   strict=False)
            if b > 2 * a + 20]
    assert grew == [], "\n".join(f"{a} -> {b}: {s}" for s, a, b in grew)


# ------------------------------------------------------------------ bounded work


def test_prune_takes_only_due_clips_with_a_staged_copy_in_bounded_batches(q, tmp_path):
    history(q, 50)  # 50 wiped clips whose copies are long gone: never looked at
    ids = []
    for i in range(7):
        c, _ = q.discover("CAM1", f"DCIM/P{i}.MP4", 10, 1, now=T0)
        q.transition(c.id, E.COPY_STARTED, now=T0)
        q.transition(c.id, E.STAGED, staged_path=str(tmp_path / f"{c.id}.clip"), sha256="ab" * 32, now=T0)
        q.transition(c.id, E.UPLOAD_STARTED, now=T0)
        q.transition(c.id, E.UPLOADED, now=T0 + i)
        ids.append(c.id)
    due = q.clips_to_prune(T0 + 3.5, limit=100)
    earlier = q.clips(state=S.UPLOADED)[0].id  # history()'s one uploaded clip with a staged copy, at T0
    # uploaded before the horizon, oldest first; never the staged, failed or long-pruned ones
    assert [c.id for c in due] == [earlier] + ids[:4]
    assert [c.id for c in q.clips_to_prune(T0 + 100, limit=3)] == [earlier] + ids[:2]


def test_audit_stream_pages_in_seq_order(q):
    history(q, 30)
    all_rows = q.audit_rows()
    assert [r["seq"] for r in q.iter_audit(page=7)] == [r["seq"] for r in all_rows]
    assert list(q.iter_audit(page=7)) == all_rows
    assert [r["seq"] for r in q.iter_audit(after_seq=100, page=16)] == [r["seq"] for r in all_rows[100:]]
    n, bad = q.verify_audit()
    assert n == len(all_rows) and bad is None


def test_last_event_is_the_latest_of_its_kind(q):
    assert q.last_event("daemon.started") is None
    q.record("daemon.started", detail={"n": 1})
    q.record("other", detail={})
    q.record("daemon.started", detail={"n": 2})
    q.record("other", detail={})
    assert q.last_event("daemon.started")["detail"] == {"n": 2}


# ------------------------------------------------------------------ the bench's generator


def _scalegen():
    import importlib.util
    from pathlib import Path

    p = Path(__file__).resolve().parents[2] / "scripts" / "benchlib" / "scalegen.py"
    spec = importlib.util.spec_from_file_location("scalegen", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tables(path) -> dict:
    con = sqlite3.connect(path)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()  # noqa: S608 - fixed names
                for t in ("clips", "audit", "state_counts", "audit_heads", "audit_exports", "cameras")}
    finally:
        con.close()


def test_bench_bulk_generator_writes_the_rows_of_the_normal_path(tmp_path, monkeypatch):
    import shutil

    from dockd.evidence.keys import key_path

    gen = _scalegen()
    a, b = tmp_path / "a", tmp_path / "b"
    slow = gen.generate(a, 120, cameras=3, per_day=20, batch=25, bulk=False)  # through Queue._transition
    b.mkdir()
    shutil.copytree(key_path(a).parent, key_path(b).parent)  # same station key: same signed heads
    fast = gen.generate(b, 120, cameras=3, per_day=20, batch=25, bulk=True)
    assert slow["in_flight"] == fast["in_flight"]
    ta, tb = _tables(a / "queue.db"), _tables(b / "queue.db")
    assert len(ta["audit_exports"]) >= 4 and len(ta["audit"]) > 6 * 80
    for t in ta:  # identical but for the data dir in the in-flight clips' staged paths
        assert [tuple(v.replace(str(a), str(b)) if isinstance(v, str) else v for v in r) for r in ta[t]] == tb[t], t
    q = Queue(b / "queue.db")
    try:
        assert q.verify_audit() == (len(tb["audit"]), None)
        assert q.counts_and_bytes() == q.recount()
    finally:
        q.close()
