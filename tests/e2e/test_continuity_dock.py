"""Continuity at the dock, end to end: two cameras in a watch dir, docked three times (`dockd run --drain`).

Camera CAMA (names with date and number, device id from a file on the camera):
  dock 1: 0001, 0002, 0004 (a gap: 0003), 0005 (too big for the staging disk: seen, never copied),
          NOTES.MP4 (a name the profile does not parse);
  dock 2: 0005 gone (vanished before it was copied), 0007 twice (a repeated number; 0006 missing since
          the last dock), 0008 dated a day after the station's clock;
  dock 3: nothing new: nothing reported again.
Camera CAMB: 0010, 0011 at dock 1; formatted, then 0001, 0002 at dock 2 (a wrapped sequence), and its
device id file now claims CAMA's id (a device id conflict).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.support.cli import run_dockd
from tests.support.uploads import camera_dir, station_config

PATTERN = r"^DCIM/(?P<start>\d{8}_\d{6})_(?P<seq>\d{4})\.MP4$"


def name(t: float, seq: int) -> str:
    return f"DCIM/{datetime.fromtimestamp(t, UTC):%Y%m%d_%H%M%S}_{seq:04d}.MP4"


def drain(cfg: Path, log: Path) -> None:
    r = run_dockd("run", "--drain", config=cfg, timeout=120)
    log.write_text(log.read_text() + r.stdout + r.stderr if log.exists() else r.stdout + r.stderr)
    assert r.returncode in (0, 1), r.stderr  # 1: the clip that vanished is quarantined for a person


def anomalies(cfg: Path) -> list[dict]:
    r = run_dockd("audit", "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    return [x["detail"] for x in rows if x["event"] == "camera.anomaly"]


def docked(cfg: Path, serial: str) -> list[dict]:
    r = run_dockd("audit", "--json", "--camera", serial, config=cfg)
    return [json.loads(x)["detail"] for x in r.stdout.splitlines() if json.loads(x)["event"] == "camera.docked"]


def without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def test_two_cameras_three_docks_each_anomaly_once(tmp_path):
    watch, data, log = tmp_path / "dock", tmp_path / "data", tmp_path / "dockd.log"
    watch.mkdir()
    cfg = station_config(tmp_path / "dockd.toml", data_dir=data, station_id="st9",
                         sources={"watch_dirs": [str(watch)], "watch_profile": "dated"},
                         offload={"reserve_free_mb": 0, "max_file_size_gb": 1 << 14},
                         metrics={"listen": ""},
                         camera=[{"name": "dated", "match": {"DOCKD_PROFILE": "dated"},
                                  "names": {"pattern": PATTERN, "time_format": "%Y%m%d_%H%M%S", "zone": "UTC"},
                                  "device_id": "file:MISC/ID.TXT"}])
    now = time.time()
    a, b = watch / "CAMA", watch / "CAMB"
    c1, c2, c4, c5 = (name(now - h * 3600, s) for h, s in ((5, 1), (4, 2), (3, 4), (2, 5)))
    camera_dir(a, {c1: 1000, c2: 1001, c4: 1002, "DCIM/NOTES.MP4": 10, "MISC/ID.TXT": b"DEV-A\n"})
    with open(a / c5, "wb") as f:  # sparse: bigger than the staging disk, so it is seen but never copied
        f.truncate(1 << 42)
    b10, b11 = name(now - 7200, 10), name(now - 3600, 11)
    camera_dir(b, {b10: 500, b11: 501, "MISC/ID.TXT": b"DEV-B\n"}, seed=2)

    drain(cfg, log)  # ---------------------------------------------------------------- dock 1
    first = anomalies(cfg)
    assert sorted((x["camera"], x["kind"]) for x in first) == [("CAMA", "seq_gap"), ("CAMA", "unparsed_name")]
    gap = next(x for x in first if x["kind"] == "seq_gap")
    assert without(gap, "docked_at") == {"kind": "seq_gap", "camera": "CAMA", "from": 3, "to": 3, "missing": 1,
                                         "within": "card", "path": c4}
    dock1 = docked(cfg, "CAMA")
    assert len(dock1) == 1
    d = dock1[0]
    assert (d["station"], d["camera"], d["device_id"], d["profile"]) == ("st9", "CAMA", "DEV-A", "dated")
    assert (d["clips_on_card"], d["clips_new"], d["seq_min"], d["seq_max"]) == (5, 5, 1, 5)
    assert d["days_since_last_dock"] is None and d["bay"] == "dir:dock"
    # the newest new clip started 2 h before the dock: the camera's clock is at least that far behind
    assert -2 * 3600 - 120 < d["camera_offset_s"] < -2 * 3600 + 5

    (a / c5).unlink()  # ---------------------------------------------------------------- between docks
    c7a, c7b, c8 = name(now - 3600, 7), name(now - 3000, 7), name(now + 86400, 8)
    camera_dir(a, {c7a: 1003, c7b: 1004, c8: 1005}, seed=3)
    for p in (b10, b11):
        (b / p).unlink()  # formatted: the numbering starts again
    camera_dir(b, {name(now - 600, 1): 502, name(now - 300, 2): 503, "MISC/ID.TXT": b"DEV-A\n"}, seed=4)

    drain(cfg, log)  # ---------------------------------------------------------------- dock 2
    second = anomalies(cfg)[len(first):]
    got = {(x["camera"], x["kind"]): without(x, "kind", "camera", "docked_at") for x in second}
    assert set(got) == {("CAMA", "clip_vanished"), ("CAMA", "seq_gap"), ("CAMA", "seq_repeated"),
                        ("CAMA", "clock_ahead"), ("CAMB", "seq_wrapped"), ("CAMB", "device_id_conflict")}, second
    assert len(second) == 6
    assert got["CAMA", "clip_vanished"]["path"] == c5 and got["CAMA", "clip_vanished"]["seq_no"] == 5
    assert got["CAMA", "seq_gap"] == {"from": 6, "to": 6, "missing": 1, "within": "since_last_dock", "path": c7a}
    assert got["CAMA", "seq_repeated"] == {"seq_no": 7, "paths": sorted([c7a, c7b])}
    ahead = got["CAMA", "clock_ahead"]
    assert ahead["path"] == c8 and 86400 - 300 < ahead["ahead_s"] <= 86400
    assert got["CAMB", "seq_wrapped"] == {"last_seq_before": 11, "first_seq_after": 1}
    assert got["CAMB", "device_id_conflict"] == {"device_id": "DEV-A", "cameras": ["CAMA", "CAMB"]}
    st = json.loads(run_dockd("status", "--json", config=cfg).stdout)  # status marks both cameras
    assert {c["serial"]: c["anomalies"] for c in st["cameras"]} == {"CAMA": 4, "CAMB": 2}
    notes = " ".join(line.split("│")[-2].strip() for line in run_dockd("status", config=cfg).stdout.splitlines()
                     if line.count("│") > 2)  # the last column of the table, folded over lines
    assert "4 anomalies at last dock (dockd camera CAMA)" in notes and "2 anomalies at last" in notes

    drain(cfg, log)  # ---------------------------------------------------------------- dock 3: nothing new
    assert anomalies(cfg)[len(first) + len(second):] == []
    assert len(docked(cfg, "CAMA")) == 3 and len(docked(cfg, "CAMB")) == 3

    r = run_dockd("camera", "CAMA", "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    cam = json.loads(r.stdout)
    assert (cam["docks_total"], cam["device_id"], cam["last_seq"], cam["open_anomalies"]) == (3, "DEV-A", 8, 0)
    assert cam["anomalies_total"] == 6 and len(cam["docks"]) == 3
    assert [x["clips_new"] for x in cam["docks"]] == [0, 3, 5]  # newest first
    assert sorted(x["kind"] for x in cam["anomalies"]) == ["clip_vanished", "clock_ahead", "seq_gap", "seq_gap",
                                                           "seq_repeated", "unparsed_name"]
    assert json.loads(run_dockd("camera", "CAMB", "--json", "--docks", "1", config=cfg).stdout)["docks"][0][
        "seq_max"] == 2
    human = run_dockd("camera", "CAMA", config=cfg)
    assert human.returncode == 0 and "clip_vanished" in human.stdout and "DEV-A" in human.stdout
    missing = run_dockd("camera", "NOPE", config=cfg)
    assert missing.returncode == 1 and "not found" in missing.stderr and len(missing.stderr.splitlines()) == 1

    # each clip's signed manifest carries what its name said and the dock that copied it
    q = run_dockd("queue", "--camera", "CAMA", "--json", config=cfg)
    rows = {x["path"]: x for x in json.loads(q.stdout)}
    shown = json.loads(run_dockd("show", str(rows[c7b]["id"]), "--json", config=cfg).stdout)["manifest"]
    assert shown["camera"]["device_id"] == "DEV-A"
    assert shown["name_facts"] == {"profile": "dated", "seq_no": 7, "parsed": True, "started_at_source": "name",
                                   "started_at": datetime.fromtimestamp(int(now - 3000), UTC)
                                   .isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    assert shown["dock"]["bay"] == "dir:dock" and shown["dock"]["camera_offset_s"] is not None
    notes = json.loads(run_dockd("show", str(rows["DCIM/NOTES.MP4"]["id"]), "--json", config=cfg).stdout)
    assert notes["manifest"]["name_facts"]["parsed"] is False
    assert os.path.exists(a / c8)  # nothing here deletes anything (no storage: nothing is wiped)
    st = json.loads(run_dockd("status", "--json", config=cfg).stdout)  # the last dock was clean
    assert {c["serial"]: c["anomalies"] for c in st["cameras"]} == {"CAMA": 0, "CAMB": 0}
