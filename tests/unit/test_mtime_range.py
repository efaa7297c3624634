"""Dates from integer mtimes, one way everywhere; an out-of-range entry is one skip, not a dead camera.

Real files on the test's filesystem (ext4 holds mtimes from 1901 to 2446 with
nanoseconds), the real offloader, and the real ``dockd import`` command.
"""

from __future__ import annotations

import calendar
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockd.core import timefmt
from dockd.core.lifecycle import ClipState
from dockd.queue.store import Queue, rfc3339_ns
from dockd.storage.base import object_key
from tests.support.cli import run_dockd
from tests.support.offloader_helpers import Station, make_volume
from tests.support.uploads import station_config

LAST_NS_OF_DAY = calendar.timegm((2026, 11, 21, 23, 59, 59)) * 1_000_000_000 + 999_999_700  # 23:59:59.9999997
YEAR_2300 = calendar.timegm((2300, 1, 1, 0, 0, 0)) * 1_000_000_000  # past int64 nanoseconds (2262-04-11)


def key_date(key: str) -> str:
    *_, y, m, d, _name = key.split("/")
    return f"{y}-{m}-{d}"


def set_mtime(p: Path, ns: int) -> None:
    os.utime(p, ns=(ns, ns))
    assert p.stat().st_mtime_ns == ns  # the filesystem holds it exactly


# ------------------------------------------------------------------ the pure helper


@pytest.mark.parametrize("ns, text", [
    (0, "1970-01-01T00:00:00.000000000Z"),
    (-1, "1969-12-31T23:59:59.999999999Z"),
    (LAST_NS_OF_DAY, "2026-11-21T23:59:59.999999700Z"),
    (timefmt.MAX_NS, "2262-04-11T23:47:16.854775807Z"),
    (timefmt.MIN_NS, "1677-09-21T00:12:43.145224192Z"),
])
def test_rfc3339_and_key_date_at_the_boundaries(ns, text):
    assert timefmt.rfc3339_ns(ns) == rfc3339_ns(ns) == text
    assert key_date(object_key("bwc", "st1", "CAM1", ns, "ab" * 32, ".mp4")) == text[:10]
    assert timefmt.check_ns(ns) is None


@pytest.mark.parametrize("ns", [timefmt.MAX_NS + 1, timefmt.MIN_NS - 1, YEAR_2300, 10 ** 30])
def test_out_of_range_is_refused_with_a_reason(ns):
    why = timefmt.check_ns(ns)
    assert why is not None and why.startswith("mtime out of range") and str(ns) in why
    with pytest.raises(timefmt.OutOfRange):
        timefmt.rfc3339_ns(ns)
    with pytest.raises(timefmt.OutOfRange):
        object_key("", "st1", "CAM1", ns, "ab" * 32, "")


@given(st.integers(min_value=timefmt.MIN_NS, max_value=timefmt.MAX_NS))
def test_key_date_and_manifest_date_agree_for_any_mtime(ns):
    key = object_key("bwc", "st1", "CAM1", ns, "cd" * 32, ".mp4")
    text = timefmt.rfc3339_ns(ns)
    assert key_date(key) == text[:10]
    # an independent oracle: whole microseconds (floored) never cross a day that nanoseconds don't
    oracle = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    assert text[:26] == oracle.strftime("%Y-%m-%dT%H:%M:%S.%f")
    assert text[26:] == f"{ns % 1000:03d}Z"


# ------------------------------------------------------------------ through the offloader


def test_key_manifest_and_queue_json_name_the_same_day(tmp_path):
    """23:59:59.9999997, -1 ns and 0: float seconds would round the first two into the next day/year."""
    vol = tmp_path / "vol"
    cases = {"DCIM/LATE.MP4": LAST_NS_OF_DAY, "DCIM/NEG.MP4": -1, "DCIM/ZERO.MP4": 0}
    for path, ns in cases.items():
        make_volume(vol, {path: os.urandom(1000)})
        set_mtime(vol / path, ns)
    stn = Station(tmp_path)
    try:
        s = stn.offload(vol)
        assert (s.staged, s.skipped) == (3, [])
        for c in stn.q.clips():
            expect = timefmt.rfc3339_ns(cases[c.path])
            manifest = json.loads(c.manifest)
            assert manifest["clip"]["mtime"] == c.to_json()["mtime"] == expect
            assert key_date(c.object_key) == expect[:10]
        dates = {c.path: key_date(c.object_key) for c in stn.q.clips()}
        assert dates == {"DCIM/LATE.MP4": "2026-11-21", "DCIM/NEG.MP4": "1969-12-31", "DCIM/ZERO.MP4": "1970-01-01"}
    finally:
        stn.q.close()


def far_future_card(root: Path) -> Path:
    """Two good clips and one stamped in the year 2300 (beyond int64 nanoseconds)."""
    make_volume(root, {"DCIM/100/A.MP4": os.urandom(2000), "DCIM/100/B.MP4": os.urandom(3000),
                       "DCIM/100/FUTURE.MP4": os.urandom(1000)})
    set_mtime(root / "DCIM/100/FUTURE.MP4", YEAR_2300)
    return root


def test_a_far_future_mtime_skips_that_clip_only(tmp_path):
    vol = far_future_card(tmp_path / "vol")
    stn = Station(tmp_path)
    try:
        s = stn.offload(vol)
        assert (s.staged, s.aborted, s.errors) == (2, 0, [])
        assert [sk["path"] for sk in s.skipped] == ["DCIM/100/FUTURE.MP4"]
        assert s.skipped[0]["reason"].startswith("mtime out of range")
        assert sorted(c.path for c in stn.q.clips(state=ClipState.STAGED)) == ["DCIM/100/A.MP4", "DCIM/100/B.MP4"]
        assert [(k["path"], k["reason"]) for k in stn.q.skips("CAM1")] == [
            ("DCIM/100/FUTURE.MP4", s.skipped[0]["reason"])]
        audit = [r for r in stn.q.audit_rows() if r["event"] == "entry.skipped"]
        assert len(audit) == 1 and audit[0]["detail"]["path"] == "DCIM/100/FUTURE.MP4"
        # the next dock sees the same: nothing new recorded, the good clips are not copied again
        again = stn.offload(vol)
        assert (again.staged, again.already, len(again.skipped)) == (0, 2, 1)
        assert len([r for r in stn.q.audit_rows() if r["event"] == "entry.skipped"]) == 1
    finally:
        stn.q.close()


def test_dockd_import_skips_a_far_future_clip_and_imports_the_rest(tmp_path):
    card = far_future_card(tmp_path / "card")
    data = tmp_path / "data"
    cfg = station_config(tmp_path / "dockd.toml", data_dir=data,
                         offload={"reserve_free_mb": 0, "clip_globs": ["DCIM/**/*.MP4"]})
    r = run_dockd("import", card, "--camera", "CAM1", "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = json.loads(r.stdout)
    assert (out["staged"], out["aborted"], out["errors"]) == (2, 0, [])
    assert [(sk["path"], sk["reason"][:18]) for sk in out["skipped"]] == [("DCIM/100/FUTURE.MP4", "mtime out of range")]
    q = Queue(data / "queue.db")
    try:
        assert sorted(c.path for c in q.clips()) == ["DCIM/100/A.MP4", "DCIM/100/B.MP4"]
        assert q.camera("CAM1").state != "error"
    finally:
        q.close()


def test_a_size_beyond_what_json_holds_exactly_is_skipped(tmp_path, monkeypatch):
    """Sizes go into JSON read as doubles (jq): above 2**53 - 1 the scan skips the file whatever
    ``max_file_size_gb`` says. No filesystem here holds 8 PiB, so the bound is lowered for the test."""
    from dockd.camera import volume
    assert volume.MAX_SIZE == (1 << 53) - 1
    monkeypatch.setattr(volume, "MAX_SIZE", 2500)
    vol = make_volume(tmp_path / "vol", {"DCIM/SMALL.MP4": os.urandom(2000), "DCIM/BIG.MP4": os.urandom(3000)})
    stn = Station(tmp_path)
    try:
        s = stn.offload(vol)
        assert s.staged == 1 and [c.path for c in stn.q.clips()] == ["DCIM/SMALL.MP4"]
        assert s.skipped == [{"path": "DCIM/BIG.MP4", "reason": "size out of range (3000 > 2500 bytes)"}]
    finally:
        stn.q.close()
