"""Dock records in the queue (schema v3), the offloader's dock facts and their failure path, the metrics."""

from __future__ import annotations

import json
import sqlite3

from dockd.core.continuity import Known, OnCard, assess
from dockd.queue.store import Queue
from dockd.station import dockfacts
from dockd.station.metrics import RECENT_S, Metrics
from tests.support.offloader_helpers import T0, Station, make_volume


def test_record_dock_once_per_dock_with_its_events(tmp_path):
    q = Queue(tmp_path / "q.db")
    q.dock_camera("CAM1", source="watch", now=T0, record=False)
    assert [r["event"] for r in q.audit_rows()] == []  # the worker records camera.docked, with the facts
    a = assess(Known(), [OnCard("A", 1), OnCard("B", 3)], T0, serial="CAM1")
    facts = {"device_id": "D1", "profile": "p", "last_docked_at": T0, "last_seq": 3}
    assert q.record_dock("CAM1", T0, {**a.facts, "docked_at": "x"}, facts=facts, anomalies=a.anomalies, now=T0)
    assert not q.record_dock("CAM1", T0, {"docked_at": "again"}, facts=facts, anomalies=a.anomalies, now=T0)
    rows = q.audit_rows(camera="CAM1")
    assert [r["event"] for r in rows] == ["camera.docked", "camera.anomaly"]
    assert rows[1]["detail"] == {"kind": "seq_gap", "camera": "CAM1", "docked_at": "x", "from": 2, "to": 2,
                                 "missing": 1, "within": "card", "path": "B"}
    f = q.camera_facts("CAM1")
    assert (f["docks"], f["open_anomalies"], f["anomalies_total"], f["last_seq"], f["device_id"]) == (1, 1, 1, 3, "D1")
    assert q.device_id_claimed_by("D1") == ["CAM1"] and q.device_id_claimed_by("D2") == []
    assert q.anomaly_counts() == {"seq_gap": 1}
    for i in range(1, 5):  # later docks, clean
        q.record_dock("CAM1", T0 + i, {"docked_at": str(i)}, facts={"last_docked_at": T0 + i}, now=T0 + i)
    assert [d["docked_at"] for d in q.camera_docks("CAM1", limit=3)] == ["4", "3", "2"]
    f = q.camera_facts("CAM1")
    assert (f["docks"], f["open_anomalies"], f["anomalies_total"], f["last_seq"]) == (5, 0, 1, 3)


def test_metrics_count_anomalies_and_recent_docks(tmp_path):
    q = Queue(tmp_path / "q.db")
    q.record_dock("CAM1", T0, {}, facts={"last_docked_at": T0}, anomalies=[{"kind": "seq_gap"}, {"kind": "seq_gap"}])
    q.record_dock("OLD", T0 - RECENT_S - 10, {}, facts={"last_docked_at": T0 - RECENT_S - 10})
    m = Metrics(q, tmp_path)
    col = next(c for c in m.registry._collector_to_names if type(c).__name__ == "QueueCollector")
    col.clock = lambda: T0  # "recently" is measured from now
    text = m.exposition().decode()
    assert 'dockd_camera_anomalies_total{kind="seq_gap"} 2.0' in text
    assert m.registry.get_sample_value("dockd_camera_last_dock_timestamp_seconds", {"camera": "CAM1"}) == T0
    assert 'camera="OLD"' not in text  # cardinality: only cameras docked recently


def test_offload_records_the_dock_and_signs_the_facts_into_manifests(tmp_path):
    st = Station(tmp_path)
    vol = make_volume(tmp_path / "vol", {"DCIM/100MEDIA/FILE0001.MP4": b"a", "DCIM/100MEDIA/FILE0003.MP4": b"b"})
    st.cfg = st.off.cfg = type(st.cfg)(**{**st.cfg.__dict__, "cameras": (_profile(),)})
    st.off.offload(_cam(), vol)
    ev = [r for r in st.q.audit_rows(camera="CAM1") if r["event"] in ("camera.docked", "camera.anomaly")]
    assert [r["event"] for r in ev] == ["camera.docked", "camera.docked", "camera.anomaly"]  # import, then the dock
    d = ev[1]["detail"]
    assert (d["clips_on_card"], d["clips_new"], d["seq_min"], d["seq_max"], d["device_id"]) == (2, 2, 1, 3, "CAM1")
    m = json.loads(st.q.clips(camera="CAM1")[1].manifest)
    assert m["camera"]["device_id"] == "CAM1" and m["dock"]["bay"] is None
    assert m["name_facts"] == {"profile": "gen", "seq_no": 3, "started_at": None, "started_at_source": None,
                               "parsed": True}
    st.off.offload(_cam(), vol)  # a second pass of the same dock: nothing recorded again
    assert len([r for r in st.q.audit_rows(camera="CAM1") if r["event"].startswith("camera.")]) == 3


def test_a_failure_computing_facts_never_stops_the_offload(tmp_path, monkeypatch):
    st = Station(tmp_path)
    vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": b"a"})

    def boom(*a, **k):
        raise RuntimeError("facts exploded")

    monkeypatch.setattr("dockd.station.offloader.assess_dock", boom)
    s = st.offload(vol)
    assert s.staged == 1
    failed = [r for r in st.q.audit_rows(camera="CAM1") if r["event"] == "camera.facts_failed"]
    assert failed[0]["detail"] == {"error": "RuntimeError: facts exploded"}
    m = json.loads(st.q.clips(camera="CAM1")[0].manifest)
    assert m["dock"] is None and m["name_facts"]["parsed"] is False
    # the daemon's fall-back still records the dock, bare (nothing claimed about the card)
    st.q.dock_camera("CAM1", source="watch", now=T0 + 5, record=False)
    assert dockfacts.record_bare_dock(st.cfg, st.q, _cam())
    assert not dockfacts.record_bare_dock(st.cfg, st.q, _cam())
    bare = [r for r in st.q.audit_rows(camera="CAM1") if r["event"] == "camera.docked"][-1]["detail"]
    assert bare["inventory"] is False and bare["clips_on_card"] is None and bare["anomalies"] == []


def test_device_id_file_is_read_bounded_without_following_links(tmp_path):
    from dockd.camera.volume import Volume

    st = Station(tmp_path)
    prof = _profile(device_id="file:MISC/ID.TXT")
    cfg = type(st.cfg)(**{**st.cfg.__dict__, "cameras": (prof,)})
    root = make_volume(tmp_path / "vol", {"MISC/ID.TXT": b"  BWC-77 \nsecond line\n"})
    with Volume(root) as v:
        assert dockfacts.read_device_id(cfg, _cam(), v) == "BWC-77"
    (root / "MISC" / "ID.TXT").unlink()
    (root / "MISC" / "ID.TXT").symlink_to("/etc/hostname")
    with Volume(root) as v:
        assert dockfacts.read_device_id(cfg, _cam(), v) is None
    (root / "MISC" / "ID.TXT").unlink()
    (root / "MISC" / "ID.TXT").write_bytes(b"x" * 5000)
    with Volume(root) as v:
        assert dockfacts.read_device_id(cfg, _cam(), v) is None


def test_new_statements_use_their_indexes(tmp_path):
    q = Queue(tmp_path / "q.db")
    con = sqlite3.connect(tmp_path / "q.db")
    for sql, params in [("SELECT serial FROM camera_facts WHERE device_id = ? ORDER BY serial LIMIT 16", ("D",)),
                        ("SELECT docked_at, detail FROM camera_docks WHERE camera = ? ORDER BY docked_at DESC "
                         "LIMIT 20", ("C",)),
                        ("SELECT id FROM camera_docks WHERE camera = ? AND docked_at = ?", ("C", 1.0))]:
        plan = " ".join(r[3] for r in con.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "SCAN" not in plan and "USING" in plan, (sql, plan)
    q.close()


def _profile(device_id: str = "udev_serial"):
    from dockd.config import CameraProfile, NamesConfig

    return CameraProfile(name="gen", match={"DOCKD_PROFILE": ("gen",)}, device_id=device_id,
                         names=NamesConfig(pattern=r"DCIM/\d{3}MEDIA/FILE(?P<seq>\d{4})\.MP4"))


def _cam():
    from dockd.core.events import CameraInfo

    return CameraInfo("CAM1", vendor="Axon", source="import", profile="gen")


def test_anomalies_per_dock_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(dockfacts, "MAX_ANOMALIES_PER_DOCK", 2)
    st = Station(tmp_path)
    st.cfg = st.off.cfg = type(st.cfg)(**{**st.cfg.__dict__, "cameras": (_profile(),)})
    vol = make_volume(tmp_path / "vol", {f"DCIM/X{i}.MP4": bytes([i]) for i in range(5)})
    st.off.offload(_cam(), vol)
    rows = st.q.audit_rows(camera="CAM1")
    dock = [r["detail"] for r in rows if r["event"] == "camera.docked"][-1]
    assert len(dock["anomalies"]) == 2 and dock["anomalies_omitted"] == 3
    assert len([r for r in rows if r["event"] == "camera.anomaly"]) == 2
    assert len(st.q.clips(camera="CAM1", state="staged")) == 5  # and every clip was copied


def test_dockd_camera_bad_input_is_one_line(tmp_path):
    from tests.support.cli import run_dockd
    from tests.support.uploads import station_config

    cfg = station_config(tmp_path / "dockd.toml", data_dir=tmp_path / "data")
    r = run_dockd("camera", "CAM1", config=cfg)
    assert r.returncode == 2 and "no queue" in r.stderr and len(r.stderr.splitlines()) == 1
    (tmp_path / "data").mkdir(mode=0o700)
    Queue(tmp_path / "data" / "queue.db").close()
    r = run_dockd("camera", "\x1b[31mX\u202e", config=cfg)
    assert r.returncode == 1 and "not found" in r.stderr and "\x1b" not in r.stderr and "\u202e" not in r.stderr
    r = run_dockd("camera", "CAM1", "--docks", "0", config=cfg)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
