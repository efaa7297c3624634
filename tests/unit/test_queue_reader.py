"""The read-only path of the queue (``status``, ``queue``, ``show``): the same answers as the full
``Queue``, from a file opened read-only, without loading SQLAlchemy or cryptography."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dockd.core.lifecycle import ClipEvent, ClipState
from dockd.queue import fileformat, reads, schema
from dockd.queue.store import Queue
from tests.support.cli import run_dockd
from tests.support.uploads import station_config

E = ClipEvent
T0 = 1_700_000_000.0


@pytest.fixture
def filled(tmp_path):
    """A queue with two cameras, clips in several states, a sidecar, a skip, an alarm and audit rows."""
    q = Queue(tmp_path / "queue.db")
    q.dock_camera("CAM1", source="watch", now=T0 - 100)
    q.dock_camera("CAM2", source="udev", bay="2", now=T0 - 50)
    ids = []
    for i in range(6):
        c, _ = q.discover("CAM1" if i % 2 else "CAM2", f"DCIM/{i:04d}.MP4", 100 + i, 1_600_000_000_000_000_000 + i,
                          now=T0 + i)
        ids.append(c.id)
    for cid in ids[:4]:
        q.transition(cid, E.COPY_STARTED, now=T0 + 10)
        q.transition(cid, E.STAGED, sha256="ab" * 32, staged_path=f"/s/{cid}.clip", now=T0 + 11,
                     sidecar_rows=[{"path": f"DCIM/{cid:04d}.GPS", "size": 7, "mtime_ns": 5, "sha256": "cd" * 32,
                                    "staged_path": None}] if cid == ids[0] else None)
    q.add_skip("CAM1", "DCIM/odd.bin", "not a regular file", now=T0)
    q.raise_alarm("storage", "unreachable", now=T0 + 3)
    q.record_dock("CAM1", T0 - 100, {"camera": "CAM1", "clips_on_card": 3, "anomalies": []},
                  facts={"last_docked_at": T0 - 100, "last_seq": 7}, now=T0 + 4)
    yield q, ids
    q.close()


def test_every_read_answers_as_the_full_queue(filled):
    q, ids = filled
    r = reads.QueueReader(q.path)
    try:
        assert r.schema_version() == q.schema_version()
        assert r.cameras() == q.cameras() and len(r.cameras()) == 2
        for serial in ("CAM1", "CAM2", "NOPE"):
            assert r.camera(serial) == q.camera(serial)
            assert r.camera_progress(serial) == q.camera_progress(serial)
            assert r.skips(serial) == q.skips(serial)
        assert r.camera_progress("CAM2")["staged"]["clips"] == 2
        for kw in ({}, {"state": "staged"}, {"state": ["found", "staged"]}, {"camera": "CAM1"}, {"limit": 2},
                   {"ids": ids[1:3]}, {"state": "wiped"}):
            assert [c.to_json() for c in r.clips(**kw)] == [c.to_json() for c in q.clips(**kw)], kw
        assert [c.id for c in r.clips(limit=2)] == ids[:2]
        assert r.clip(ids[0]) == q.clip(ids[0])
        assert r.counts() == q.counts() and r.counts()[str(ClipState.STAGED)] == 4
        assert r.counts_and_bytes() == q.counts_and_bytes()
        assert r.oldest_pending() == q.oldest_pending() == T0
        assert r.sidecars(ids[0]) == q.sidecars(ids[0]) and len(r.sidecars(ids[0])) == 1
        assert r.alarms() == q.alarms() and r.alarms()[0]["kind"] == "storage"
        assert r.audit_rows(clip=ids[0]) == q.audit_rows(clip=ids[0]) and len(r.audit_rows(clip=ids[0])) >= 3
        assert r.audit_rows(camera="CAM1", after_seq=2) == q.audit_rows(camera="CAM1", after_seq=2)
        for serial in ("CAM1", "NOPE"):
            assert r.camera_facts(serial) == q.camera_facts(serial)
            assert r.camera_docks(serial, limit=5) == q.camera_docks(serial, limit=5)
        assert r.all_camera_facts() == q.all_camera_facts()
        assert r.camera_docks("CAM1") and r.camera_facts("CAM1")["docks"] == 1
    finally:
        r.close()


def test_missing_clip_is_not_found(filled):
    q, _ = filled
    r = reads.QueueReader(q.path)
    try:
        with pytest.raises(Exception) as a:
            r.clip(10**9)
        with pytest.raises(Exception) as b:
            q.clip(10**9)
        assert type(a.value) is type(b.value) and a.value.exit_code == b.value.exit_code
    finally:
        r.close()


def test_reader_cannot_write(filled):
    q, _ = filled
    r = reads.QueueReader(q.path)
    try:
        import sqlite3

        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            r.conn.execute("DELETE FROM clips")
    finally:
        r.close()
    assert len(q.clips()) == 6


def test_versions_agree():
    assert fileformat.LATEST_VERSION == schema.SCHEMA_VERSION == schema.MIGRATIONS[-1][0]


def test_an_older_queue_is_migrated_by_the_read_commands(tmp_path, monkeypatch):
    """A station upgraded in place: its queue is at an older schema, whose tables the read queries do not
    all find. The read commands then open it as the daemon would (migrating it), never fail on it."""
    (tmp_path / "data").mkdir()
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
        q = Queue(tmp_path / "data" / "queue.db")
        q.dock_camera("CAM1", source="watch", now=T0)
        q.discover("CAM1", "DCIM/A.MP4", 1, 1, now=T0)
        assert q.schema_version() == 2
        q.close()
    cfg = station_config(tmp_path / "c.toml", data_dir=tmp_path / "data", sources={"drop_privileges": False})
    for argv in (["status", "--json"], ["camera", "CAM1", "--json"], ["queue"], ["show", "1"]):
        r = run_dockd("--config", str(cfg), *argv)
        assert r.returncode == 0, (argv, r.stderr)
    q = Queue(tmp_path / "data" / "queue.db", migrate=False)
    assert q.schema_version() == schema.SCHEMA_VERSION
    q.close()


HEAVY = ("sqlalchemy", "boto3", "botocore", "cryptography", "duckdb", "pyudev", "tenacity", "structlog")


@pytest.mark.parametrize("argv,allowed", [
    (["--help"], set()),
    (["status", "--json"], {"cryptography"}),  # it shows the station key's id and enrolment
    (["queue", "--limit", "5"], set()),
    (["show", "1"], set()),
    (["show", "1", "--json"], set()),
    (["camera", "CAM1", "--json"], set()),
])
def test_read_commands_load_no_heavy_library(tmp_path, argv, allowed):
    """The read commands answer in a fraction of a second on any queue: they must not import the ORM,
    the cloud SDK or (but for the key status) cryptography, each tens to hundreds of milliseconds of
    start-up before any work."""
    (tmp_path / "data").mkdir()
    q = Queue(tmp_path / "data" / "queue.db")
    q.dock_camera("CAM1", source="watch", now=T0)
    q.discover("CAM1", "DCIM/A.MP4", 1, 1, now=T0)
    q.close()
    cfg = station_config(tmp_path / "c.toml", data_dir=tmp_path / "data", sources={"drop_privileges": False})
    code = ("import sys, runpy\n"
            f"sys.argv = ['dockd', '--config', {str(cfg)!r}] + {argv!r}\n"
            "from dockd.cli.main import entry\n"
            "rc = 0\n"
            "try:\n    entry()\nexcept SystemExit as e:\n    rc = e.code or 0\n"
            f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
            "print(json.dumps([rc, heavy]), file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, timeout=60)
    rc, loaded = json.loads(out.stderr.strip().splitlines()[-1])
    assert rc == 0, out.stderr[-2000:]
    assert set(loaded) <= allowed, (argv, loaded)
    assert "DCIM/A.MP4" in out.stdout or argv[0] in ("--help", "status", "camera")
