"""Station heartbeats: signed, seq only grows, bounded, keys match the body, a failure never raises."""

from __future__ import annotations

import time

import pytest

from dockd import config
from dockd.core import heartbeat as hb
from dockd.evidence import keys, manifest
from dockd.queue.store import Queue
from dockd.station.heartbeat import Heartbeats, build, next_seq, signed
from dockd.storage.base import ErrorClass, StoreFailure
from dockd.storage.localfs import FileBackend


@pytest.fixture
def parts(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    share = tmp_path / "share"
    share.mkdir()
    q = Queue(data / "queue.db")
    key, _ = keys.load_or_create(data)
    backend = FileBackend(config.StorageConfig(url=f"file://{share}"))
    yield q, key, backend, data
    q.close()


def _figures():
    return {"free_bytes": 5 << 30, "upload_failures": 2, "storage": {"reachable": True, "error": "x"}}


def test_send_writes_a_signed_heartbeat_under_its_key(parts):
    q, key, backend, data = parts
    q.dock_camera("CAM1", source="watch", bay="3", now=time.time())
    hbs = Heartbeats(queue=q, backend=backend, key=key, station="st-1", prefix="", data_dir=data, interval_s=60,
                     figures=_figures)
    k1 = hbs.send_now()
    k2 = hbs.send_now()
    b1 = manifest.parse(backend.read_small(k1, hb.MAX_BYTES))
    b2 = manifest.parse(backend.read_small(k2, hb.MAX_BYTES))
    manifest.check_signature(b1, key.public)
    assert hb.problem(b1) is None
    assert b2["seq"] > b1["seq"]
    assert hb.key_matches_body("", "st-1", k1, b1) and not hb.key_matches_body("", "st-1", k2, b1)
    assert [c["serial"] for c in b1["cameras"]] == ["CAM1"] and b1["cameras"][0]["bay"] == "3"
    assert b1["free_bytes"] == 5 << 30 and b1["upload_failures"] == 2
    assert list(backend.list_keys(hb.stations_prefix(""))) == [hb.marker_key("", "st-1")]
    assert list(backend.list_keys(hb.station_dir("", "st-1"), start_after=k1)) == [k2]


def test_seq_grows_even_if_the_clock_goes_back(tmp_path):
    a = next_seq(tmp_path, 2_000_000.0)
    b = next_seq(tmp_path, 1_000_000.0)
    assert b == a + 1
    (tmp_path / "heartbeat.seq").unlink()
    assert next_seq(tmp_path, 2_000_001.0) > b  # a lost seq file: the time in ms still gives a larger number


def test_heartbeat_is_bounded(parts):
    q, key, backend, data = parts
    for i in range(hb.MAX_CAMERAS + 40):
        q.dock_camera(f"CAM{i:04d}" + "x" * 150, source="watch", bay="b" * 500, now=1000.0 + i)
    for i in range(40):
        q.raise_alarm(f"kind{i}", "m" * 5000)
    body = build(q, station="s", now=5000.0, seq=1, interval_s=60, **_figures())
    assert len(body["cameras"]) == hb.MAX_CAMERAS and body["cameras_not_listed"] == 40
    assert body["cameras"][0]["serial"].startswith(f"CAM{hb.MAX_CAMERAS + 39:04d}")  # most recent first
    assert all(len(c["bay"]) == hb.MAX_TEXT for c in body["cameras"])
    assert len(body["alarms"]) == hb.MAX_ALARMS
    assert len(signed(body, key)) <= hb.MAX_BYTES
    assert hb.problem(body) is None


class _Down:
    def put_bytes(self, *a, **k):
        raise StoreFailure(ErrorClass.TRANSIENT, "storage down")


def test_a_failed_heartbeat_is_logged_and_retried_next_interval(parts):
    q, key, _backend, data = parts
    now = [0.0]
    hbs = Heartbeats(queue=q, backend=_Down(), key=key, station="s", prefix="p", data_dir=data, interval_s=60,
                     figures=_figures, monotonic=lambda: now[0])
    assert hbs.maybe_send() is None  # the first one goes one interval after start
    now[0] = 60.0
    t = hbs.maybe_send()
    assert t is not None
    t.join()
    assert hbs.maybe_send() is None  # not due yet
    now[0] = 121.0
    t2 = hbs.maybe_send()
    assert t2 is not None
    t2.join()


@pytest.mark.parametrize("bad,why", [
    ({}, "format"), ({"format": hb.FORMAT}, "station"),
    ({"format": hb.FORMAT, "station": "s", "seq": 0}, "seq"),
    ({"format": hb.FORMAT, "station": "s", "seq": 1, "at": "x", "free_bytes": -1}, "free_bytes"),
])
def test_malformed_heartbeats_are_named(bad, why):
    assert why in (hb.problem(bad) or "")


def test_key_layout():
    k = hb.key("pre", "st 1", 1_764_480_000_123_000_000, 42)
    assert k == "pre/_fleet/heartbeats/station=st 1/2025-11-30/052000-0000000000000042.json"
    assert hb.parse_key("pre", "st 1", k) == ("2025-11-30", "052000", 42)
    assert hb.parse_key("pre", "st 2", k) is None
    assert hb.parse_key("pre", "st 1", k.replace(".json", ".js")) is None


def test_times_are_rfc3339(parts):
    q, key, backend, data = parts
    q.raise_alarm("clock", "storage says the clock is wrong", now=1_780_000_000.5)
    q.record("audit.exported", detail={"day": "2026-05-27"}, now=1_780_000_001.0)
    body = build(q, station="s", now=1_780_000_100.0, seq=1, interval_s=60, **_figures())
    assert body["alarms"][0]["at"] == "2026-05-28T20:26:40.500Z"
    assert body["audit"]["last_export_at"].startswith("2026-05-28T20:26:41")
    assert body["clock"] == {"alarm": True}


def _readme_recipe() -> list[str]:
    """The commands of the README's "Checking a heartbeat without dockd" block, verbatim."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("### Checking a heartbeat without dockd", 1)[1].split("```", 2)[1]
    return [line[2:] for line in block.splitlines() if line.startswith("$ ")]


def test_readme_heartbeat_recipe_with_openssl_and_jq(parts, tmp_path):
    import json
    import shutil
    import subprocess

    if not (shutil.which("jq") and shutil.which("openssl")):
        pytest.skip("jq and openssl needed")
    q, key, backend, data = parts
    q.dock_camera("CAM1", source="watch", bay="3", now=time.time())
    hbs = Heartbeats(queue=q, backend=backend, key=key, station="st-1", prefix="", data_dir=data, interval_s=60,
                     figures=_figures)
    raw = backend.read_small(hbs.send_now(), hb.MAX_BYTES)
    work = tmp_path / "recipe"
    work.mkdir()
    (work / "hb.json").write_bytes(raw)
    (work / "station.pub.pem").write_text(keys.public_pem(key.public))
    cmds = _readme_recipe()
    assert len(cmds) == 4 and cmds[2].startswith("openssl pkeyutl -verify")
    r = subprocess.run(["bash", "-ec", "\n".join(cmds)], cwd=work, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Signature Verified Successfully" in r.stdout, r.stdout + r.stderr
    assert r.stdout.splitlines()[-3] == "st-1"
    doc = json.loads(raw)
    doc["free_bytes"] += 1  # altered: the same recipe fails
    (work / "hb.json").write_text(json.dumps(doc))
    r = subprocess.run(["bash", "-ec", "\n".join(cmds)], cwd=work, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


def _ok_body() -> dict:
    return {"format": hb.FORMAT, "station": "s", "seq": 1, "at": "2026-01-01T00:00:00Z", "free_bytes": 1,
            "upload_failures": 0, "queue": {}, "oldest_pending_age_s": None, "clock": {"alarm": False},
            "storage": None, "audit": {"last_head_at": None, "last_export_at": None}, "alarms": [],
            "cameras": [{"serial": "C1", "bay": None, "state": "ready", "docked": True, "last_dock": None,
                         "anomalies": [], "clock_offset_s": None}]}


@pytest.mark.parametrize("change,why", [
    ({"audit": "yesterday"}, "audit is not a table"),
    ({"audit": {"last_export_at": 5}}, "audit times are not text"),
    ({"storage": []}, "storage is not a table"),
    ({"cameras": [{"serial": ""}]}, "no serial"),
    ({"cameras": [{"serial": "C", "bay": 3}]}, "bay, state or last_dock is not text"),
    ({"cameras": [{"serial": "C", "docked": "yes"}]}, "docked is not true or false"),
    ({"cameras": [{"serial": "C", "anomalies": "x"}]}, "anomalies"),
    ({"cameras": [{"serial": "C", "anomalies": ["x" * (hb.MAX_TEXT + 1)]}]}, "anomalies"),
    ({"cameras": [{"serial": "C", "clock_offset_s": True}]}, "clock_offset_s"),
    ({"alarms": [{"message": "m"}]}, "no kind"),
])
def test_a_signed_but_malformed_heartbeat_is_named(change, why):
    """A station key can sign anything: every member the fleet view uses is checked before it is used."""
    assert hb.problem(_ok_body()) is None
    assert why in (hb.problem({**_ok_body(), **change}) or "")


def test_a_camera_carries_its_last_dock_anomalies_and_clock_offset(parts):
    """The fleet view shows what the station's continuity check found (README "Continuity at the dock")."""
    q, key, backend, data = parts
    t = time.time()
    q.dock_camera("CAM1", source="watch", bay="3", now=t)
    q.dock_camera("CAM2", source="watch", bay="4", now=t)
    detail = {"camera": "CAM1", "anomalies": [{"kind": "seq_gap", "from": 3, "to": 5, "missing": 1},
                                              {"kind": "clock_ahead", "ahead_s": 900.0},
                                              {"kind": "seq_gap", "from": 8, "to": 9, "missing": 1}]}
    q.record_dock("CAM1", t, detail, facts={"last_docked_at": t, "last_offset_s": 912.5, "last_offset_at": t},
                  anomalies=detail["anomalies"], now=t)
    q.record_dock("CAM2", t, {"camera": "CAM2", "anomalies": []}, facts={"last_docked_at": t}, now=t)
    body = build(q, station="st-1", now=t, seq=1, interval_s=60, **_figures())
    cams = {c["serial"]: c for c in body["cameras"]}
    assert cams["CAM1"]["anomalies"] == ["clock_ahead", "seq_gap"] and cams["CAM1"]["clock_offset_s"] == 912.5
    assert cams["CAM2"]["anomalies"] == [] and cams["CAM2"]["clock_offset_s"] is None
    assert hb.problem(manifest.sign(body, key)) is None
