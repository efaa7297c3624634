"""The fleet reader and `dockd fleet` against a file:// share: trusted, stale, unhealthy, forged, replayed,
unenrolled stations, cameras not docked; the cache reads only what is new."""

from __future__ import annotations

import json
import time

import pytest

from dockd import config
from dockd.agency.fleet import classify as fc
from dockd.agency.fleet.reader import Reader, verify
from dockd.core import heartbeat as hb
from dockd.station.heartbeat import signed
from dockd.storage.localfs import FileBackend
from tests.support import fleet as sf
from tests.support.cli import run_dockd
from tests.support.uploads import station_config

NOW = time.time()
DAY = 86400.0


@pytest.fixture
def world(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    a = sf.agency(tmp_path / "agency")
    backend = FileBackend(config.StorageConfig(url=f"file://{share}"))
    return a, backend, share


def _read(a, backend, cache=None, now=NOW):
    states = Reader(backend, "", a.state(), cache=cache, now=now).read()
    return {s.station: s for s in states}


def _verdicts(a, backend, cache=None):
    return {n: fc.station(n, s.heartbeat, s.problem, NOW, fc.Thresholds())
            for n, s in _read(a, backend, cache).items()}


def test_every_kind_of_station(world):
    a, backend, _ = world
    good, stale, sick = a.station_key("good"), a.station_key("stale"), a.station_key("sick")
    a.station_key("silent")  # enrolled, never sent a heartbeat
    rogue = a.station_key("rogue", enrol=False)
    other = a.station_key("other")
    sf.put(backend, "", good, sf.body("good", NOW - 30, 2, cameras=[sf.camera("C1", NOW - 4 * DAY)]))
    sf.put(backend, "", good, sf.body("good", NOW - 330, 1))
    sf.put(backend, "", stale, sf.body("stale", NOW - 3600, 7))
    sf.put(backend, "", sick, sf.body("sick", NOW - 30, 3, alarms=[{"kind": "storage", "message": "down"}]))
    sf.put(backend, "", rogue, sf.body("rogue", NOW - 30, 1))
    sf.put(backend, "", other, sf.body("good2", NOW - 30, 1))  # a key enrolled for another station
    v = _verdicts(a, backend)
    got = {n: x.status for n, x in v.items()}
    assert got == {"good": fc.UP, "stale": fc.STALE, "sick": fc.UNHEALTHY, "silent": fc.SILENT,
                   "rogue": fc.UNTRUSTED, "other": fc.SILENT, "good2": fc.UNTRUSTED}
    assert "not enrolled" in v["rogue"].reasons[0]
    assert "enrolled for ['other'], not good2" in v["good2"].reasons[0]
    assert v["good"].heartbeat["seq"] == 2
    rows = fc.cameras(list(v.values()), NOW)
    assert [r["serial"] for r in fc.not_docked(rows, 3 * DAY)] == ["C1"]


def test_forged_heartbeat_is_untrusted(world):
    a, backend, _ = world
    k = a.station_key("s1")
    b = sf.body("s1", NOW - 30, 5, pending=0)
    doc = json.loads(signed(b, k))
    doc["queue"]["failed"] = 0
    doc["free_bytes"] = 1  # altered after signing
    sf.put(backend, "", k, b, data=json.dumps(doc).encode())
    v = _verdicts(a, backend)["s1"]
    assert v.status == fc.UNTRUSTED and "signature does not verify" in v.reasons[0]


def test_replayed_heartbeats_are_rejected(world, tmp_path):
    a, backend, _ = world
    k = a.station_key("s1")
    old = sf.body("s1", NOW - 7200, 3)
    sf.put(backend, "", k, old)
    cache = tmp_path / "cache.json"
    assert _read(a, backend, cache)["s1"].seq == 3
    # the same signed bytes copied under a newer name: its key does not match its body
    newer = hb.key("", "s1", int((NOW - 10) * 1e9), 9)
    sf.put(backend, "", k, old, at_key=newer)
    st = _read(a, backend, cache)["s1"]
    assert st.heartbeat["seq"] == 3 and "copied or replayed" in st.problem
    assert fc.station("s1", st.heartbeat, st.problem, NOW, fc.Thresholds()).status == fc.UNTRUSTED
    # a heartbeat whose seq is not above the verified one is a replay, whatever its name
    obj, why = verify(a.state(), "s1", "", hb.key("", "s1", int((NOW - 7200) * 1e9), 3), signed(old, k), 3)
    assert obj is None and "replayed" in why
    # a newer genuine heartbeat clears it
    sf.put(backend, "", k, sf.body("s1", NOW - 5, 10))
    st = _read(a, backend, cache)["s1"]
    assert st.heartbeat["seq"] == 10 and st.problem is None


def test_second_run_reads_only_what_is_new(world, tmp_path):
    a, backend, _ = world
    k = a.station_key("s1")
    for i in range(20):
        sf.put(backend, "", k, sf.body("s1", NOW - 3600 + i * 60, i + 1))
    cache = tmp_path / "cache.json"
    first = _read(a, backend, cache)["s1"]
    assert (first.seq, first.reads) == (20, 1)
    second = _read(a, backend, cache)["s1"]
    assert (second.seq, second.reads) == (20, 0)
    sf.put(backend, "", k, sf.body("s1", NOW - 10, 21))
    third = _read(a, backend, cache)["s1"]
    assert (third.seq, third.reads) == (21, 1)
    # an edited cache is not trusted: its heartbeat is verified again
    doc = json.loads(cache.read_text())
    doc["stations"]["s1"]["heartbeat"]["free_bytes"] = 7
    cache.write_text(json.dumps(doc))
    fourth = _read(a, backend, cache)["s1"]
    assert fourth.heartbeat["free_bytes"] != 7 and fourth.seq == 21


def test_a_forged_future_key_does_not_hide_later_heartbeats(world, tmp_path):
    a, backend, _ = world
    k = a.station_key("s1")
    rogue = a.station_key("x", enrol=False)
    sf.put(backend, "", k, sf.body("s1", NOW - 600, 1))
    cache = tmp_path / "cache.json"
    _read(a, backend, cache)
    far = sf.body("s1", NOW + 300 * DAY, 99_999_999)
    sf.put(backend, "", rogue, far)
    assert "not enrolled" in _read(a, backend, cache)["s1"].problem
    sf.put(backend, "", k, sf.body("s1", NOW - 5, 2))
    st = _read(a, backend, cache)["s1"]
    assert st.seq == 2  # still found after the forged key, which is not read again
    assert st.problem is not None  # and the forged object (higher seq) still makes the station untrusted


def test_cli_fleet_stations_cameras_backlog(world, tmp_path):
    a, backend, share = world
    k = a.station_key("north")
    sf.put(backend, "", k, sf.body("north", NOW - 30, 1, pending=2, oldest_s=int(4 * DAY),
                                   cameras=[sf.camera("CAM<1>", NOW - 5 * DAY), sf.camera("CAM2", NOW, docked=True)]))
    rogue = a.station_key("south", enrol=False)
    sf.put(backend, "", rogue, sf.body("south", NOW - 30, 1))
    cfg = station_config(tmp_path / "agency.toml", data_dir=tmp_path / "d", storage={"url": f"file://{share}"},
                         trust={"root_pubkey": str(a.root_pem)})
    common = ["--trust", str(a.trust_dir), "--cache", str(tmp_path / "c.json")]
    r = run_dockd("fleet", "stations", "--json", *common, config=cfg)
    assert r.returncode == 1, r.stderr  # not every station is up
    rows = {x["station"]: x for x in json.loads(r.stdout)}
    assert rows["north"]["status"] == fc.UNHEALTHY and rows["south"]["status"] == fc.UNTRUSTED
    r = run_dockd("fleet", "stations", *common, config=cfg)
    assert "north" in r.stdout and "unhealthy" in r.stdout and "untrusted" in r.stdout
    r = run_dockd("fleet", "cameras", "--json", "--not-docked", "3d", *common, config=cfg)
    assert [c["serial"] for c in json.loads(r.stdout)] == ["CAM<1>"]
    r = run_dockd("fleet", "backlog", "--json", "--older-than", "2d", *common, config=cfg)
    assert [(x["station"], x["pending"]) for x in json.loads(r.stdout)] == [("north", 2)]
    r = run_dockd("fleet", "cameras", "--not-docked", "3 days", *common, config=cfg)
    assert r.returncode == 2 and r.stderr.startswith("dockd: error: --not-docked:") and "Traceback" not in r.stderr


def test_cli_fleet_usage_errors_are_one_line(tmp_path):
    no_storage = station_config(tmp_path / "a.toml", data_dir=tmp_path / "d")
    r = run_dockd("fleet", "stations", "--root", tmp_path / "none.pem", config=no_storage)
    assert r.returncode == 2 and "no [storage] section" in r.stderr and len(r.stderr.splitlines()) == 1
    no_root = station_config(tmp_path / "b.toml", data_dir=tmp_path / "d", storage={"url": f"file://{tmp_path}"})
    r = run_dockd("fleet", "cameras", config=no_root)
    assert r.returncode == 2 and "no pinned agency root" in r.stderr and "Traceback" not in r.stderr
