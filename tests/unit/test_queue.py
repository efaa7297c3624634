"""The durable SQLite queue: migrations, pragmas, atomic transitions with audit, leases, concurrency."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from dockd.core import timefmt
from dockd.core.errors import IllegalTransition, NotFound, SchemaTooNew
from dockd.core.lifecycle import ClipEvent, ClipState
from dockd.queue import schema
from dockd.queue.schema import SCHEMA_VERSION
from dockd.queue.store import Queue

E, S = ClipEvent, ClipState
T0 = 1_700_000_000.0


def new_queue(path) -> Queue:
    """A queue with the test cameras known (clips reference their camera)."""
    qu = Queue(path)
    for serial in ("CAM", "CAM1", "CAM2"):
        if qu.camera(serial) is None:
            qu.dock_camera(serial, source="import", now=T0 - 100)
    return qu


@pytest.fixture
def q(tmp_path):
    qu = new_queue(tmp_path / "queue.db")
    yield qu
    qu.close()


def raw(q: Queue) -> sqlite3.Connection:
    return sqlite3.connect(q.path)


def staged_clip(q: Queue, path: str = "DCIM/A.MP4", *, camera: str = "CAM1", now: float = T0) -> int:
    c, _ = q.discover(camera, path, 100, 1_600_000_000_123_456_789, now=now)
    q.transition(c.id, E.COPY_STARTED, now=now)
    q.transition(c.id, E.STAGED, sha256="ab" * 32, staged_path=f"/s/{c.id}.clip", now=now)
    return c.id


def audit_count(q: Queue) -> int:
    return len(q.audit_rows())


# ------------------------------------------------------------------ migrations


def test_fresh_db_is_at_schema_version(tmp_path):
    assert SCHEMA_VERSION == schema.MIGRATIONS[-1][0]
    assert [v for v, _ in schema.MIGRATIONS] == sorted({v for v, _ in schema.MIGRATIONS})
    q = Queue(tmp_path / "q.db")
    try:
        assert q.schema_version() == SCHEMA_VERSION
        assert q.migrate() == []  # idempotent
        tables = {r[0] for r in raw(q).execute("select name from sqlite_master where type='table'")}
        assert {"cameras", "clips", "sidecars", "parts", "skips", "alarms", "audit"} <= tables
    finally:
        q.close()


def test_unmigrated_open_leaves_db_empty(tmp_path):
    q = Queue(tmp_path / "q.db", migrate=False)
    try:
        assert q.schema_version() == 0
    finally:
        q.close()


def test_appended_migration_upgrades_existing_db_in_place(tmp_path, monkeypatch):
    p = tmp_path / "q.db"
    q = new_queue(p)
    c, _ = q.discover("CAM1", "DCIM/A.MP4", 10, 5, now=T0)
    q.transition(c.id, E.COPY_STARTED, now=T0)
    n_audit = audit_count(q)
    q.close()

    def v2(conn):
        conn.exec_driver_sql("ALTER TABLE clips ADD COLUMN retention_class TEXT DEFAULT 'standard'")
        conn.exec_driver_sql("CREATE TABLE holds (clip_id INTEGER PRIMARY KEY REFERENCES clips(id))")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, (SCHEMA_VERSION + 1, v2)])
    q2 = Queue(p, migrate=False)
    try:
        assert q2.schema_version() == SCHEMA_VERSION
        assert q2.migrate() == [SCHEMA_VERSION + 1]
        assert q2.schema_version() == SCHEMA_VERSION + 1
        assert q2.migrate() == []
        # old data kept, new column present with its default, chain still intact
        got = q2.clip(c.id)
        assert got.state is S.COPYING and got.path == "DCIM/A.MP4"
        with q2.engine.connect() as conn:
            assert conn.execute(text("select retention_class from clips")).scalar_one() == "standard"
            assert conn.execute(text("select count(*) from holds")).scalar_one() == 0
        assert audit_count(q2) == n_audit
        assert q2.verify_audit() == (n_audit, None)
    finally:
        q2.close()


def test_failing_migration_rolls_back_and_keeps_version(tmp_path, monkeypatch):
    p = tmp_path / "q.db"
    Queue(p).close()

    def broken(conn):
        conn.exec_driver_sql("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, (SCHEMA_VERSION + 1, broken)])
    with pytest.raises(RuntimeError):
        Queue(p)
    con = sqlite3.connect(p)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("select count(*) from sqlite_master where name='half_done'").fetchone()[0] == 0
    con.close()


def test_newer_schema_raises_schema_too_new(tmp_path):
    p = tmp_path / "q.db"
    Queue(p).close()
    con = sqlite3.connect(p)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    con.commit()
    con.close()
    with pytest.raises(SchemaTooNew) as ei:
        Queue(p)
    msg = str(ei.value)
    assert str(p) in msg and str(SCHEMA_VERSION + 5) in msg and "upgrade dockd" in msg
    assert ei.value.exit_code == 1


def test_pragmas_wal_and_synchronous_full(q):
    with q.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert c.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    # WAL is persistent in the file itself
    assert raw(q).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ------------------------------------------------------------------ clips and transitions


def test_discover_is_idempotent(q):
    c1, new1 = q.discover("CAM1", "DCIM/A.MP4", 100, 7, now=T0)
    n = audit_count(q)
    c2, new2 = q.discover("CAM1", "DCIM/A.MP4", 100, 7, now=T0 + 5)
    assert (new1, new2) == (True, False)
    assert c1 == c2 and c1.state is S.DISCOVERED and c1.created_at == T0
    assert audit_count(q) == n and len(q.audit_rows(clip=c1.id)) == 1
    # a different size/mtime/camera is a different clip
    c3, new3 = q.discover("CAM1", "DCIM/A.MP4", 101, 7, now=T0)
    c4, new4 = q.discover("CAM2", "DCIM/A.MP4", 100, 7, now=T0)
    assert new3 and new4 and len({c1.id, c3.id, c4.id}) == 3
    assert [r["event"] for r in q.audit_rows() if r["clip"]] == ["clip.discovered"] * 3
    assert q.audit_rows(clip=c1.id)[0]["detail"] == {"path": "DCIM/A.MP4", "size": 100,
                                           "mtime": "1970-01-01T00:00:00.000000007Z"}


def test_transition_commits_state_and_audit_together(q):
    c, _ = q.discover("CAM1", "DCIM/A.MP4", 100, 7, now=T0)
    got = q.transition(c.id, E.COPY_STARTED, now=T0 + 1, detail={"why": "test"})
    assert got.state is S.COPYING and got.updated_at == T0 + 1
    # visible to an independent connection: committed
    con = raw(q)
    assert con.execute("select state from clips where id=?", (c.id,)).fetchone()[0] == "copying"
    last = con.execute("select event, clip, camera, detail from audit order by seq desc limit 1").fetchone()
    assert last[:3] == ("clip.copy_started", c.id, "CAM1")
    assert last[3] == '{"from":"discovered","to":"copying","why":"test"}'  # stored in its RFC 8785 form
    staged = q.transition(c.id, E.STAGED, now=T0 + 2, sha256="cd" * 32)
    assert staged.staged_at == T0 + 2 and staged.sha256 == "cd" * 32


def test_illegal_transition_leaves_no_trace(q):
    c, _ = q.discover("CAM1", "DCIM/A.MP4", 100, 7, now=T0)
    before_rows = q.audit_rows()
    with pytest.raises(IllegalTransition):
        q.transition(c.id, E.WIPED, now=T0 + 1, sha256="ee" * 32)
    with pytest.raises(IllegalTransition):
        q.transition(c.id, E.UPLOADED, now=T0 + 1)
    with pytest.raises(IllegalTransition):  # expect= mismatch is refused too
        q.transition(c.id, E.COPY_STARTED, expect=S.STAGED, now=T0 + 1)
    assert q.audit_rows() == before_rows
    after = q.clip(c.id)
    assert after.state is S.DISCOVERED and after.sha256 is None and after.updated_at == T0
    with pytest.raises(NotFound):
        q.transition(999, E.COPY_STARTED)


def test_a_failing_audit_insert_rolls_back_the_state_change(q, monkeypatch):
    """State and audit row are one transaction: if the audit append fails, the state is unchanged."""
    c, _ = q.discover("CAM1", "DCIM/A.MP4", 100, 7, now=T0)

    def boom(*a, **k):
        raise RuntimeError("audit append failed")

    monkeypatch.setattr(q, "_audit", boom)
    with pytest.raises(RuntimeError):
        q.transition(c.id, E.COPY_STARTED, now=T0)
    monkeypatch.undo()
    assert q.clip(c.id).state is S.DISCOVERED
    assert [r["event"] for r in q.audit_rows(clip=c.id)] == ["clip.discovered"]


def test_full_walk_stamps_times_and_clears_leases(q):
    cid = staged_clip(q, now=T0)
    up = q.claim_upload("w1", lease_s=60, now=T0 + 10)
    assert up.id == cid and up.state is S.UPLOADING and up.lease_owner == "w1" and up.lease_expires == T0 + 70
    assert q.renew_lease(cid, "w1", lease_s=60, now=T0 + 20) is True
    assert q.clip(cid).lease_expires == T0 + 80
    assert q.renew_lease(cid, "w2", lease_s=60, now=T0 + 20) is False
    done = q.transition(cid, E.UPLOADED, now=T0 + 30)
    assert done.uploaded_at == T0 + 30 and done.lease_owner is None and done.lease_expires is None
    assert q.renew_lease(cid, "w1", lease_s=60, now=T0 + 31) is False
    with pytest.raises(IllegalTransition):  # no receipt without a committed intent
        q.transition(cid, E.WIPED, now=T0 + 35)
    back = q.transition(q.transition(cid, E.WIPE_STARTED, now=T0 + 36).id, E.WIPE_ABORTED, now=T0 + 37)
    assert back.state is S.UPLOADED and back.uploaded_at == T0 + 30 and back.wiped_at is None  # not re-stamped
    assert q.transition(cid, E.WIPE_STARTED, now=T0 + 38).state is S.WIPING
    w = q.transition(cid, E.WIPED, now=T0 + 40)
    assert w.wiped_at == T0 + 40 and w.state is S.WIPED
    assert [r["event"] for r in q.audit_rows(clip=cid)] == [
        "clip.discovered", "clip.copy_started", "clip.staged", "clip.upload_started", "clip.uploaded",
        "clip.wipe_started", "clip.wipe_aborted", "clip.wipe_started", "clip.wiped"]
    assert q.verify_audit()[1] is None


def test_claim_respects_next_attempt_at(q):
    a = staged_clip(q, "DCIM/A.MP4")
    b = staged_clip(q, "DCIM/B.MP4")
    q.update_clip(a, next_attempt_at=T0 + 100)
    q.update_clip(b, next_attempt_at=T0 + 50)
    assert q.claim_upload("w", lease_s=10, now=T0) is None
    assert q.claim_upload("w", lease_s=10, now=T0 + 50).id == b
    assert q.claim_upload("w", lease_s=10, now=T0 + 99) is None
    assert q.claim_upload("w", lease_s=10, now=T0 + 100).id == a
    assert q.claim_upload("w", lease_s=10, now=T0 + 1000) is None


def test_claim_prefers_never_attempted_then_oldest(q):
    retry = staged_clip(q, "DCIM/A.MP4")
    q.update_clip(retry, next_attempt_at=T0 - 1)
    fresh1 = staged_clip(q, "DCIM/B.MP4")
    fresh2 = staged_clip(q, "DCIM/C.MP4")
    got = [q.claim_upload("w", lease_s=10, now=T0).id for _ in range(3)]
    assert got == [fresh1, fresh2, retry]


def test_leased_clip_is_not_claimed_again_until_released(q):
    cid = staged_clip(q)
    assert q.claim_upload("w1", lease_s=60, now=T0).id == cid
    assert q.claim_upload("w2", lease_s=60, now=T0 + 1) is None
    assert q.claim_upload("w2", lease_s=60, now=T0 + 10_000) is None  # expiry alone does not free it
    assert q.release_leases(expired_before=T0 + 59, now=T0 + 59) == []  # not yet expired
    assert q.clip(cid).state is S.UPLOADING
    assert q.release_leases(expired_before=T0 + 61, now=T0 + 61) == [cid]
    c = q.clip(cid)
    assert c.state is S.STAGED and c.lease_owner is None and c.lease_expires is None
    assert c.staged_at == T0  # a retry is not a new staging
    ev = q.audit_rows(clip=cid)[-1]
    assert ev["event"] == "clip.upload_retry" and ev["detail"]["reason"] == "lease released"
    assert q.claim_upload("w2", lease_s=60, now=T0 + 62).lease_owner == "w2"


def test_release_all_leases_at_startup(q):
    ids = [staged_clip(q, f"DCIM/{i}.MP4") for i in range(3)]
    for i in range(3):
        q.claim_upload(f"w{i}", lease_s=1e6, now=T0)
    assert sorted(q.release_leases(now=T0 + 1)) == ids
    assert {c.state for c in q.clips()} == {S.STAGED}
    assert q.release_leases(now=T0 + 2) == []


def test_concurrent_claims_never_share_a_clip(tmp_path):
    q = new_queue(tmp_path / "q.db")
    try:
        ids = {staged_clip(q, f"DCIM/{i:03d}.MP4") for i in range(40)}
        got: dict[str, list[int]] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(6)

        def worker(name: str) -> None:
            mine = got.setdefault(name, [])
            try:
                start.wait()
                while (c := q.claim_upload(name, lease_s=60, now=T0)) is not None:
                    mine.append(c.id)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        claimed = [cid for lst in got.values() for cid in lst]
        assert sorted(claimed) == sorted(ids)  # every clip exactly once
        owners = {c.id: c.lease_owner for c in q.clips()}
        for name, lst in got.items():
            assert all(owners[cid] == name for cid in lst)
        n, bad = q.verify_audit()
        assert bad is None and n == 3 + 40 * 3 + 40  # 3 docks, 3 events per staged clip, 40 claims
    finally:
        q.close()


def test_concurrent_transitions_keep_the_audit_chain_linear(tmp_path):
    q = new_queue(tmp_path / "q.db")
    try:
        ids = [q.discover("CAM", f"DCIM/{i}.MP4", 1, 1, now=T0)[0].id for i in range(30)]
        errs: list[BaseException] = []

        def run(chunk):
            try:
                for cid in chunk:
                    q.transition(cid, E.COPY_STARTED, now=T0)
                    q.record("note", clip=cid, detail={"i": cid}, now=T0)
            except BaseException as e:  # noqa: BLE001
                errs.append(e)

        ts = [threading.Thread(target=run, args=(ids[i::3],)) for i in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert errs == []
        rows = q.audit_rows()
        assert [r["seq"] for r in rows] == list(range(1, 94))  # 3 docks + 30 discovered + 60
        assert q.verify_audit() == (93, None)
    finally:
        q.close()


# ------------------------------------------------------------------ discover_many, transition with sidecars


def test_discover_many_creates_new_and_returns_existing_unchanged(q):
    old = staged_clip(q, "DCIM/OLD.MP4")  # already past discovered
    seen, _ = q.discover("CAM1", "DCIM/SEEN.MP4", 5, 9, now=T0)  # discovered earlier, never copied
    other, _ = q.discover("CAM2", "DCIM/NEW1.MP4", 10, 1, now=T0)  # same path on another camera
    before = {c.id: c for c in q.clips()}
    n_audit = audit_count(q)
    found = [("DCIM/NEW1.MP4", 10, 1), ("DCIM/OLD.MP4", 100, 1_600_000_000_123_456_789),
             ("DCIM/NEW2.MP4", 20, 2), ("DCIM/NEW1.MP4", 10, 1),  # a duplicate in the input
             ("DCIM/SEEN.MP4", 5, 9), ("DCIM/NEW1.MP4", 11, 1)]  # same path, new size: a clip of its own
    got = q.discover_many("CAM1", found, now=T0 + 5)
    assert set(got) == set(found) and len(got) == 5
    assert got[("DCIM/OLD.MP4", 100, 1_600_000_000_123_456_789)] == before[old]
    assert got[("DCIM/OLD.MP4", 100, 1_600_000_000_123_456_789)].state is S.STAGED
    assert got[("DCIM/SEEN.MP4", 5, 9)] == before[seen.id]
    new = [got[k] for k in (("DCIM/NEW1.MP4", 10, 1), ("DCIM/NEW2.MP4", 20, 2), ("DCIM/NEW1.MP4", 11, 1))]
    assert len({c.id for c in new}) == 3 and not {c.id for c in new} & set(before)
    assert other.id not in {c.id for c in got.values()}
    for c in new:
        assert c.camera == "CAM1" and c.state is S.DISCOVERED and c.created_at == c.updated_at == T0 + 5
        assert c.attempts == 0 and c.sha256 is None
        rows = q.audit_rows(clip=c.id)
        assert [r["event"] for r in rows] == ["clip.discovered"]
        assert rows[0]["camera"] == "CAM1" and rows[0]["detail"] == {
            "path": c.path, "size": c.size, "mtime": timefmt.rfc3339_ns(c.mtime_ns)}
    assert audit_count(q) == n_audit + 3  # one per new identity, none for existing ones or duplicates
    assert {c.id: c for c in q.clips() if c.id in before} == before  # existing rows untouched
    # the same identities through discover() are the same clips
    again, created = q.discover("CAM1", "DCIM/NEW2.MP4", 20, 2, now=T0 + 9)
    assert (again, created) == (got[("DCIM/NEW2.MP4", 20, 2)], False)
    # idempotent: a second call creates nothing
    assert q.discover_many("CAM1", found, now=T0 + 10) == got
    assert audit_count(q) == n_audit + 3
    assert q.discover_many("CAM1", [], now=T0) == {}
    assert q.verify_audit()[1] is None


def test_discover_many_is_one_transaction(q, monkeypatch):
    """A failure part way (here: the 2nd audit append) leaves none of the scan's clips behind."""
    real = q._audit
    calls = []

    def flaky(c, ev, **kw):
        calls.append(ev)
        if len(calls) == 2:
            raise RuntimeError("audit append failed")
        return real(c, ev, **kw)

    monkeypatch.setattr(q, "_audit", flaky)
    with pytest.raises(RuntimeError):
        q.discover_many("CAM1", [("DCIM/A.MP4", 1, 1), ("DCIM/B.MP4", 2, 2), ("DCIM/C.MP4", 3, 3)], now=T0)
    monkeypatch.undo()
    assert q.clips() == []
    assert [r["event"] for r in q.audit_rows()] == ["camera.docked"] * 3
    got = q.discover_many("CAM1", [("DCIM/A.MP4", 1, 1), ("DCIM/B.MP4", 2, 2)], now=T0)
    assert len(got) == 2 and q.verify_audit()[1] is None


def side(path: str, n: int) -> dict:
    return {"path": path, "size": n, "mtime_ns": 7, "sha256": f"{n:02x}" * 32, "staged_path": f"/s/{path}"}


def test_transition_with_sidecar_rows_replaces_them_in_the_same_commit(q):
    c, _ = q.discover("CAM1", "DCIM/A.MP4", 100, 7, now=T0)
    q.transition(c.id, E.COPY_STARTED, now=T0)
    q.set_sidecars(c.id, [side("DCIM/A.OLD", 1)])  # e.g. left from an earlier attempt
    rows = [side("DCIM/A.XML", 3), side("DCIM/A.GPS", 4)]
    got = q.transition(c.id, E.STAGED, now=T0 + 1, sha256="ab" * 32, sidecar_rows=rows)
    assert got.state is S.STAGED
    have = q.sidecars(c.id)
    assert [r["path"] for r in have] == ["DCIM/A.GPS", "DCIM/A.XML"]  # replaced, not appended
    assert [{k: r[k] for k in side("x", 0)} for r in have] == [rows[1], rows[0]]
    assert all(r["clip_id"] == c.id and r["wiped_at"] is None for r in have)
    # visible to an independent connection: committed with the state
    con = raw(q)
    assert con.execute("select count(*) from sidecars where clip_id=?", (c.id,)).fetchone()[0] == 2
    assert con.execute("select state from clips where id=?", (c.id,)).fetchone()[0] == "staged"
    # without sidecar_rows a transition leaves them alone; an empty list clears them
    q.claim_upload("w", lease_s=60, now=T0 + 2)
    q.transition(c.id, E.UPLOAD_RETRY, now=T0 + 3)
    assert len(q.sidecars(c.id)) == 2
    q.claim_upload("w", lease_s=60, now=T0 + 4)
    q.transition(c.id, E.UPLOAD_RETRY, now=T0 + 5, sidecar_rows=[])
    assert q.sidecars(c.id) == []


@pytest.mark.parametrize("fail", ["bad_row", "audit", "illegal"])
def test_transition_with_sidecar_rows_is_atomic(q, monkeypatch, fail):
    """If anything in the transition fails, neither the state nor the sidecars nor the audit change."""
    c, _ = q.discover("CAM1", "DCIM/A.MP4", 100, 7, now=T0)
    q.transition(c.id, E.COPY_STARTED, now=T0)
    q.set_sidecars(c.id, [side("DCIM/A.OLD", 1)])
    before_clip, before_audit, before_sides = q.clip(c.id), q.audit_rows(), q.sidecars(c.id)
    rows = [side("DCIM/A.XML", 3), side("DCIM/A.GPS", 4)]
    ev = E.STAGED
    if fail == "bad_row":
        rows.append(side("DCIM/A.XML", 5))  # the same path twice: the insert fails after the update
        err = IntegrityError
    elif fail == "audit":
        def boom(*a, **k):
            raise RuntimeError("audit append failed")
        monkeypatch.setattr(q, "_audit", boom)
        err = RuntimeError
    else:
        ev, err = E.UPLOADED, IllegalTransition
    with pytest.raises(err):
        q.transition(c.id, ev, now=T0 + 1, sha256="ab" * 32, staged_path="/s/1.clip", sidecar_rows=rows)
    monkeypatch.undo()
    assert q.clip(c.id) == before_clip and before_clip.state is S.COPYING and before_clip.sha256 is None
    assert q.sidecars(c.id) == before_sides and [r["path"] for r in before_sides] == ["DCIM/A.OLD"]
    assert q.audit_rows() == before_audit
    # and the queue is usable afterwards
    q.transition(c.id, E.STAGED, now=T0 + 2, sha256="ab" * 32, sidecar_rows=rows[:2])
    assert [r["path"] for r in q.sidecars(c.id)] == ["DCIM/A.GPS", "DCIM/A.XML"]


# ------------------------------------------------------------------ cameras, skips, sidecars, alarms


def test_cameras_and_counts(q):
    q.dock_camera("CAM3", source="udev", vendor="V", bay="2", now=T0)
    assert q.camera("CAM3").vendor == "V" and q.camera("CAM3").bay == "2"
    q.dock_camera("CAM1", source="udev", vendor="V", bay="2", now=T0)  # re-dock updates the row
    assert q.camera("CAM1").state == "docked" and q.camera("CAM1").docked == 1
    assert q.set_camera_state("CAM1", "offloading", now=T0 + 1) is True
    assert q.set_camera_state("CAM1", "offloading", now=T0 + 2) is False  # unchanged: no audit
    assert q.set_camera_state("CAM1", "undocked", "pulled", docked=False, now=T0 + 3) is True
    cam = q.camera("CAM1")
    assert cam.state == "undocked" and cam.docked == 0 and cam.reason == "pulled"
    assert [r["event"] for r in q.audit_rows(camera="CAM1")] == ["camera.docked", "camera.docked",
                                                                  "camera.state", "camera.undocked"]
    with pytest.raises(NotFound):
        q.set_camera_state("NOPE", "ready")
    staged_clip(q, "DCIM/A.MP4", camera="CAM1")
    q.discover("CAM1", "DCIM/B.MP4", 5, 5, now=T0)
    assert q.camera_counts("CAM1") == {"staged": 1, "discovered": 1}
    assert q.counts()["staged"] == 1 and q.counts()["wiped"] == 0 and set(q.counts()) == {str(s) for s in S}
    prog = q.camera_progress("CAM1")
    assert prog["found"] == {"clips": 2, "bytes": 105} and prog["staged"] == {"clips": 1, "bytes": 100}
    assert q.oldest_pending() == T0


def test_skips_recorded_once_with_audit(q):
    assert q.add_skip("CAM1", "DCIM/link.MP4", "symbolic link", now=T0) is True
    assert q.add_skip("CAM1", "DCIM/link.MP4", "symbolic link", now=T0 + 1) is False
    assert q.add_skip("CAM1", "DCIM/link.MP4", "another reason", now=T0) is True
    assert [(s["path"], s["reason"]) for s in q.skips("CAM1")] == [("DCIM/link.MP4", "symbolic link"),
                                                                    ("DCIM/link.MP4", "another reason")]
    ev = [r for r in q.audit_rows() if r["event"] == "entry.skipped"]
    assert len(ev) == 2 and ev[0]["detail"] == {"path": "DCIM/link.MP4", "reason": "symbolic link"}


def test_sidecars_parts_alarms(q):
    cid = staged_clip(q)
    q.set_sidecars(cid, [{"path": "DCIM/A.XML", "size": 3, "mtime_ns": 1, "sha256": "aa" * 32,
                          "staged_path": "/s/x"}])
    q.set_sidecars(cid, [{"path": "DCIM/A.GPS", "size": 4, "mtime_ns": 1, "sha256": "bb" * 32,
                          "staged_path": "/s/y"}])
    assert [s["path"] for s in q.sidecars(cid)] == ["DCIM/A.GPS"]  # replaced, not appended
    q.mark_sidecar_wiped(cid, "DCIM/A.GPS", now=T0)
    assert q.sidecars(cid)[0]["wiped_at"] == T0
    q.record_part(cid, "up1", 1, 10, "x", "e1")
    q.record_part(cid, "up1", 1, 10, "y", "e2")  # re-upload of a part replaces its ledger row
    q.record_part(cid, "up1", 2, 5, "z", "e3")
    assert [(p["part_number"], p["etag"]) for p in q.parts(cid, "up1")] == [(1, "e2"), (2, "e3")]
    q.update_clip(cid, upload_id="up1")
    assert q.known_upload_ids() == {"up1"}
    q.clear_parts(cid)
    assert q.parts(cid, "up1") == []
    q.raise_alarm("clock", "clock jumped", now=T0)
    q.raise_alarm("clock", "clock jumped", now=T0 + 1)  # same message: no new audit row
    assert [a["message"] for a in q.alarms()] == ["clock jumped"]
    q.clear_alarm("clock", now=T0 + 2)
    q.clear_alarm("clock", now=T0 + 3)
    assert q.alarms() == []
    assert [r["event"] for r in q.audit_rows() if r["event"].startswith("alarm.")] == ["alarm.raised",
                                                                                        "alarm.cleared"]


def test_clip_json_shape(q):
    cid = staged_clip(q)
    j = q.clip(cid).to_json()
    assert j["state"] == "staged" and j["mtime"] == "2020-09-13T12:26:40.123456789Z"
    assert j["staged_at"] == "2023-11-14T22:13:20.000Z" and j["uploaded_at"] is None
    with pytest.raises(NotFound):
        q.clip(12345)
    assert q.clips(state="staged", camera="CAM1", limit=1)[0].id == cid
    assert q.clips(state=["wiped"]) == []


def test_readers_do_not_wait_for_a_writer(q):
    """WAL: while another connection holds the write lock, reads still answer (deferred BEGIN)."""
    cid = staged_clip(q)
    con = sqlite3.connect(q.path, isolation_level=None, timeout=0.1)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("update clips set last_error = 'uncommitted' where id = ?", (cid,))
        q.engine.dispose()
        with q.engine.connect() as c:  # fail fast instead of waiting 30 s if a read took the write lock
            c.exec_driver_sql("PRAGMA busy_timeout = 200")
        assert q.clip(cid).last_error is None  # sees the last committed state
        assert q.counts()["staged"] == 1 and q.alarms() == []
        con.execute("ROLLBACK")
    finally:
        con.close()
    assert q.transition(cid, E.UPLOAD_STARTED, now=T0).state is S.UPLOADING  # writes work again


def test_claims_are_fair_between_cameras(tmp_path):
    """Two workers, two cameras with several staged clips each: the second claim goes to the other camera."""
    from dockd.core.lifecycle import ClipEvent as E

    q = Queue(tmp_path / "q.db")
    for cam in ("CAM-A", "CAM-B"):
        q.dock_camera(cam, source="watch", now=1.0)
    for cam in ("CAM-A", "CAM-B"):  # all of A's clips are older than B's
        for i in range(3):
            c, _ = q.discover(cam, f"DCIM/{i}.MP4", 10 + i, 1, now=2.0)
            q.transition(c.id, E.COPY_STARTED, now=2.0)
            q.transition(c.id, E.STAGED, sha256="00" * 32, now=2.0)
    first = q.claim_upload("w1", lease_s=60, now=3.0)
    second = q.claim_upload("w2", lease_s=60, now=3.0)
    third = q.claim_upload("w3", lease_s=60, now=3.0)
    assert (first.camera, second.camera) == ("CAM-A", "CAM-B")
    assert third.camera == "CAM-A" and third.id != first.id


def test_update_clip_refuses_lifecycle_columns(q):
    c, _ = q.discover("CAM1", "DCIM/A.MP4", 100, 1, now=T0)
    before_clip, before_audit = q.clip(c.id), q.audit_rows()
    for col in ("state", "uploaded_at", "wiped_at", "lease_owner"):
        with pytest.raises(ValueError, match="transition"):
            q.update_clip(c.id, **{col: "x"}, last_error="e")
    assert q.clip(c.id) == before_clip and q.audit_rows() == before_audit
    q.update_clip(c.id, last_error="bookkeeping")  # not a state change: allowed
    assert q.clip(c.id).last_error == "bookkeeping"


def test_claim_upload_audits_through_the_transition(q):
    cid = staged_clip(q)
    got = q.claim_upload("w1", lease_s=60, now=T0)
    assert got is not None and got.id == cid and got.state is S.UPLOADING and got.lease_owner == "w1"
    assert got.lease_expires == T0 + 60
    row = q.audit_rows(clip=cid)[-1]
    assert row["event"] == "clip.upload_started"
    assert row["detail"] == {"from": "staged", "to": "uploading", "owner": "w1"}


def test_oldest_pending_counts_failed_clips_not_quarantined_ones(q):
    failed = staged_clip(q, now=T0)
    q.transition(failed, E.UPLOAD_FAILED, now=T0 + 1)
    quarantined, _ = q.discover("CAM1", "DCIM/Q.MP4", 100, 1, now=T0 - 100)
    q.transition(quarantined.id, E.QUARANTINE, now=T0)
    assert q.oldest_pending() == T0
