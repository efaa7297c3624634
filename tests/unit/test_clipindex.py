"""The clip index's pure parts (lines, strict parsing, key names), the producer on a local share (its
statements are index searches; what it builds when other tasks' facts are absent), and the verifier."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from sqlalchemy.dialects import sqlite as sqlite_dialect

from dockd.config import StorageConfig
from dockd.core import clipindex as ci
from dockd.core import ijson
from dockd.evidence import keys
from dockd.evidence.clipindex import StoredSegment, verify_chain
from dockd.queue.store import Queue
from dockd.station import clipindex
from dockd.storage.indexstore import read_station
from dockd.storage.localfs import FileBackend
from tests.support.clipindex import DAY, T0, dock, uploaded_clip

BASE = dict(station="st", clip_id=7, camera="CAM", path="DCIM/F1.MP4", sha256="ab" * 32, size=10,
            mtime="2026-01-05T00:00:00.000000000Z", object_key="k", manifest_key="k.manifest.json",
            uploaded_at="2026-01-05T01:00:00.000Z")


@pytest.mark.parametrize("manifest, want", [
    (None, {"seq_no": None, "started_at": None, "started_at_source": None, "duration_s": None, "ended_at": None,
            "media": None, "station_clock": None, "device_id": None, "profile": None, "offloaded_at": None}),
    ({"name_facts": {"seq_no": 12, "started_at": "2026-01-05T00:00:00+01:00", "started_at_source": "name"},
      "media": {"ok": True, "duration_s": 1.5}},
     {"seq_no": 12, "started_at": "2026-01-05T00:00:00+01:00", "started_at_source": "name", "duration_s": 1.5,
      "ended_at": "2026-01-04T23:00:01.500000Z"}),
    ({"media": {"ok": True, "duration_s": 2, "created_at": "2026-01-05T00:00:00Z", "codecs": ["h264", 5]}},
     {"started_at": "2026-01-05T00:00:00Z", "started_at_source": "media", "duration_s": 2.0,
      "ended_at": "2026-01-05T00:00:02.000000Z"}),
    ({"media": {"ok": False, "reason": "unreadable", "duration_s": 9.0}},  # a failed probe gives no duration
     {"duration_s": None, "media": {"ok": False, "duration_s": 9.0, "created_at": None, "codecs": [], "width": None,
                                    "height": None, "streams": None}}),
    ({"name_facts": {"seq_no": "12", "started_at": "yesterday"}, "media": {"ok": "yes"},  # hostile types: null
      "camera": {"device_id": 5, "profile": "p"}, "dock": {"camera_offset_s": True},
      "station_clock": {"synchronised": 1}},
     {"seq_no": None, "started_at": None, "media": None, "device_id": None, "profile": "p", "camera_offset_s": None,
      "station_clock": None}),
    ({"name_facts": {"seq_no": True}, "station_clock": {"synchronised": False, "est_error_us": 1.5}},
     {"seq_no": None, "station_clock": {"synchronised": False, "est_error_us": None, "max_error_us": None}}),
])
def test_clip_line_reads_optional_facts_with_care(manifest, want):
    line = ci.clip_line(**BASE, manifest=manifest, anomalies=["seq_gap", "clock_ahead", "seq_gap"])
    assert {k: line[k] for k in want} == want
    assert line["anomalies"] == ["clock_ahead", "seq_gap"]
    assert ci.parse_clip_line(json.dumps(line)) == line  # what the producer writes, the consumer accepts


def test_dock_line_takes_its_own_anomalies_else_the_anomaly_events():
    own = ci.dock_line(station="st", camera="C", at="2026-01-05T00:00:00.000Z",
                       detail={"anomalies": [{"kind": "seq_gap", "camera": "C", "from": 1}, "junk"], "bay": 3},
                       anomalies=[{"kind": "long_absence", "days": 9}])
    assert own["anomalies"] == [{"kind": "seq_gap", "from": 1}] and own["bay"] is None
    assert own["docked_at"] == "2026-01-05T00:00:00.000Z" and own["clips_on_card"] is None
    other = ci.dock_line(station="st", camera="C", at="2026-01-05T00:00:00.000Z", detail="not a dict",
                         anomalies=[{"kind": "long_absence", "days": 9}])
    assert other["anomalies"] == [{"kind": "long_absence", "days": 9}]
    assert ci.parse_dock_line(json.dumps(other)) == other


@pytest.mark.parametrize("text, why", [
    ('{"type": "clip", "type": "clip"}', "duplicate member"),
    ('{"type": "dock"}', "not a clip line"),
    ("[1]", "not a clip line"),
    ('{"type": "clip", "station": NaN}', "NaN"),
])
def test_parse_clip_line_is_strict(text, why):
    with pytest.raises(ijson.Invalid, match=why):
        ci.parse_clip_line(text)


def test_parse_lines_check_every_member_and_type():
    good = ci.clip_line(**BASE, manifest=None, anomalies=[])
    for k in ("path", "size", "seq_no", "media"):
        with pytest.raises(ijson.Invalid, match=k):
            ci.parse_clip_line(json.dumps({x: v for x, v in good.items() if x != k}))
    with pytest.raises(ijson.Invalid, match="size"):
        ci.parse_clip_line(json.dumps(dict(good, size=True)))  # a bool is not an integer
    with pytest.raises(ijson.Invalid, match="clips_new"):
        ci.parse_dock_line(json.dumps(dict(ci.dock_line(station="s", camera="c", at="t", detail={}, anomalies=[]),
                                           clips_new="3")))


@pytest.mark.parametrize("key, seq", [("a/_index/heads/station=s/00000012.json", 12), ("00000000.json", None),
                                      ("x/0000012.json", None), ("x/00000012.json.sha256", None),
                                      ("x/0000001a.json", None)])
def test_head_seq_of_key(key, seq):
    assert ci.head_seq_of_key(key) == seq


def test_keys_are_hive_partitions_under_the_prefix():
    assert ci.clips_key("ev/", "st-1", "2026-01-05", 3) == "ev/_index/clips/station=st-1/date=2026-01-05/00000003.jsonl"
    assert ci.docks_key("", "st-1", "2026-01-05", 3) == "_index/docks/station=st-1/date=2026-01-05/00000003.jsonl"
    assert ci.head_key("ev", "st-1", 3) == "ev/_index/heads/station=st-1/00000003.json"


# ------------------------------------------------------------------ producer on a local share


@pytest.fixture
def world(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    backend = FileBackend(StorageConfig(url=f"file://{share}"))
    key, _ = keys.load_or_create(tmp_path / "data")
    q = Queue(tmp_path / "queue.db")
    yield q, backend, key
    q.close()


def test_duplicate_content_manifest_key_and_a_quiet_day(world):
    q, backend, key = world
    dock(q, "CAM1", T0 + 100)
    cid = uploaded_clip(q, key, "CAM1", "DCIM/A.MP4", T0 + 200, prefix="bwc", station="st")
    q.record("upload.duplicate_content", camera="CAM1", clip=cid, now=T0 + 199,
             detail={"object_key": "k", "manifest_key": "bwc/x.0123456789abcdef.manifest.json"})
    assert clipindex.export(q, backend, key, "st", "bwc", T0 + DAY + 1) == [1]
    assert clipindex.export(q, backend, key, "st", "bwc", T0 + DAY + 2) == []  # today: nothing to say yet
    (seg,) = verify_chain("st", read_station(backend, "bwc", "st"), key.public, prefix="bwc")
    (line,) = seg.clip_lines()
    assert line["manifest_key"] == "bwc/x.0123456789abcdef.manifest.json"
    assert clipindex.export(q, backend, key, "st", "bwc", T0 + 3 * DAY) == [2]  # day 2 (its export event) ends
    assert [s["date"] for s in clipindex.segments(q)] == ["2026-01-05", "2026-01-06"]


def test_producer_statements_are_index_searches(world):
    q, _backend, _key = world
    con = sqlite3.connect(q.path)
    try:
        stmts = [(clipindex.SQL_CLIP, (1,)), (clipindex.SQL_CLIP_EVENTS, (1,)),
                 (clipindex.SQL_DOCK_BEFORE, ("C", 10)), (clipindex.SQL_ANOMALIES, ("C", 1, 10))]
        for st in (clipindex.PENDING, clipindex.LAST):
            c = st.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True})
            stmts.append((str(c), ()))
        stmts.append(("SELECT seq, at, event, camera, clip, detail, prev_hash, hash FROM audit "
                      "WHERE seq > ? ORDER BY seq LIMIT ?", (1, 1000)))  # iter_audit: the range
        for sql, args in stmts:
            plan = " | ".join(r[3] for r in con.execute("EXPLAIN QUERY PLAN " + sql, args))
            if "WHERE" not in sql and re.search(r"ORDER BY index_segments\.seq DESC\s+LIMIT", sql):
                continue  # the last segment: a rowid walk from the end that stops at its LIMIT 1
            assert not re.search(r"SCAN (audit|clips|index_segments)\b(?! USING INDEX ix_index_pending)", plan), \
                f"{plan} <- {sql}"
            assert "SEARCH" in plan or "ix_index_pending" in plan, f"{plan} <- {sql}"
    finally:
        con.close()


def test_verifier_never_raises_on_hostile_heads(world):
    _q, _b, key = world
    for head in (None, b"", b"\xff", b"[]", b'{"type": "dockd.index-head/1"}', b'{"a": 1, "a": 2}', b"1" * 70000):
        check = verify_chain("st", [StoredSegment(1, head, b"", b"")], key.public)
        assert list(check) == [] and check.broken is not None and check.broken.seq == 1


def test_v4_migration_from_a_v2_queue_adds_the_segments_table(tmp_path, monkeypatch):
    from dockd.queue import schema

    path = tmp_path / "queue.db"
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])  # a station as it was before the clip index
        old = Queue(path)
        assert old.schema_version() == 2
        old.close()
    q = Queue(path)  # 2 -> the latest: v3, v4 (the clip index) and every later step, each once
    try:
        assert q.schema_version() == schema.SCHEMA_VERSION >= 4
        assert clipindex.segments(q) == []
        names = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "ix_index_pending" in names
    finally:
        q.close()


def _grow(q: Queue, n: int) -> int:
    """``n`` earlier docks of CAM1, each with a clip through upload and an anomaly naming it (one
    transaction, as tests/unit/test_scale.py builds history); then one new dock and clip. Returns its id."""
    from dockd.core.lifecycle import ClipEvent as E

    q.dock_camera("CAM1", source="watch", now=T0)
    q.dock_camera("CAM2", source="watch", now=T0)
    with q.tx() as c:
        for i in range(n):
            for cam in ("CAM1", "CAM2"):  # another camera's history must not be read either
                q._audit(c, "camera.docked", camera=cam, detail={}, now=T0)
                cid = q._insert_discovered(c, cam, f"OLD{i:06d}.MP4", 1, i, T0)
                q._audit(c, "camera.anomaly", camera=cam, clip=cid, detail={"kind": "seq_gap"}, now=T0)
                for ev in (E.COPY_STARTED, E.STAGED, E.UPLOAD_STARTED, E.UPLOADED):
                    q._transition(c, cid, ev, now=T0)
    q.record("camera.docked", camera="CAM1", now=T0 + 1)
    c, _ = q.discover("CAM1", "NEW.MP4", 1, 1, now=T0 + 2)
    return c.id


def _steps(path, sql: str, args: tuple) -> int:
    con = sqlite3.connect(path)
    n = [0]

    def tick() -> int:
        n[0] += 1
        return 0

    con.set_progress_handler(tick, 1)
    try:
        con.execute(sql, args).fetchall()
    finally:
        con.close()
    return n[0]


def test_the_work_per_clip_line_does_not_grow_with_history(tmp_path):
    """The statements behind one clip line take about the same SQLite work after 20 or 400 earlier
    docks and clips of the same camera (and of another): what a clip line reads is its own dock."""
    runs = []
    for n in (20, 400):
        q = Queue(tmp_path / f"{n}.db")
        try:
            cid = _grow(q, n)
            last = q.last_audit()[0]
            dock_seq = clipindex._dock_before(q, "CAM1", last)
            assert dock_seq == last - 1  # the new dock, found without walking back through history
            stmts = [(clipindex.SQL_CLIP, (cid,)), (clipindex.SQL_CLIP_EVENTS, (cid,)),
                     (clipindex.SQL_DOCK_BEFORE, ("CAM1", last)), (clipindex.SQL_ANOMALIES, ("CAM1", dock_seq, last))]
            runs.append([_steps(q.path, sql, args) for sql, args in stmts])
        finally:
            q.close()
    small, big = runs
    assert all(b <= 2 * a + 20 for a, b in zip(small, big, strict=True)), (small, big)


def test_verifier_checks_body_keys_against_the_layout_with_or_without_the_prefix(world):
    q, backend, key = world
    dock(q, "CAM1", T0 + 100)
    assert clipindex.export(q, backend, key, "st", "bwc", T0 + DAY) == [1]
    stored = list(read_station(backend, "bwc", "st"))
    assert len(list(verify_chain("st", stored, key.public))) == 1  # a copy: any prefix
    assert len(list(verify_chain("st", stored, key.public, prefix="bwc"))) == 1
    check = verify_chain("st", stored, key.public, prefix="other")
    assert list(check) == [] and "not the layout's" in check.problems[0].reason and not check.problems[0].chain
