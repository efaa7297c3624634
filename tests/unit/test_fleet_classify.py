"""The fleet's verdicts as a table: pure functions of a verified heartbeat, a problem, now and thresholds."""

from __future__ import annotations

import pytest

from dockd.agency.fleet import classify as fc
from tests.support.fleet import body, camera

NOW = 1_780_000_000.0
T = fc.Thresholds(stale_s=900, backlog_s=86400, low_free_bytes=10 << 30, audit_overdue_s=48 * 3600)
DAY = 86400


@pytest.mark.parametrize("hb,problem,status,why", [
    (body("s", NOW - 60, 1), None, fc.UP, ""),
    (body("s", NOW - 901, 1), None, fc.STALE, "last heartbeat 15m ago"),
    (None, None, fc.SILENT, "no verified heartbeat"),
    (body("s", NOW - 60, 1), "signature does not verify", fc.UNTRUSTED, "signature does not verify"),
    (None, "key x is not enrolled", fc.UNTRUSTED, "not enrolled"),
    (body("s", NOW - 60, 1, alarms=[{"kind": "object-lock", "message": "off"}]), None, fc.UNHEALTHY,
     "alarm object-lock: off"),
    (body("s", NOW - 60, 1, pending=3, oldest_s=DAY + 1), None, fc.UNHEALTHY, "backlog: oldest clip"),
    (body("s", NOW - 60, 1, pending=3, oldest_s=DAY - 3600), None, fc.UP, ""),
    # the heartbeat's own age counts: 23h old when signed, 2h ago -> over a day now (and stale)
    (body("s", NOW - 600, 1, pending=3, oldest_s=DAY - 300), None, fc.UNHEALTHY, "backlog"),
    (body("s", NOW - 60, 1, free_bytes=1 << 30), None, fc.UNHEALTHY, "low space: 1024 MiB free"),
    (body("s", NOW - 60, 1, export_at="2026-01-01T00:00:00Z"), None, fc.UNHEALTHY, "audit export overdue"),
    (body("s", NOW - 60, 1, export_at="2026-05-28T00:00:00Z"), None, fc.UP, ""),
    (body("s", NOW + 3600, 1), None, fc.UNHEALTHY, "station clock 60m ahead"),
])
def test_station_verdicts(hb, problem, status, why):
    v = fc.station("s", hb, problem, NOW, T)
    assert v.status == status
    assert why in "; ".join(v.reasons)
    assert bool(v.reasons) == (status != fc.UP)


def test_cameras_newest_dock_wins_and_untrusted_stations_are_not_listed():
    a = fc.station("a", body("a", NOW - 60, 1, cameras=[camera("C1", NOW - 5 * DAY), camera("C2", NOW - 100)]),
                   None, NOW, T)
    b = fc.station("b", body("b", NOW - 60, 1, cameras=[camera("C1", NOW - DAY, docked=True)]), None, NOW, T)
    bad = fc.station("x", body("x", NOW - 60, 1, cameras=[camera("C9", NOW)]), "forged", NOW, T)
    rows = fc.cameras([a, b, bad], NOW)
    assert [(r["serial"], r["station"]) for r in rows] == [("C2", "a"), ("C1", "b")]
    assert [r["serial"] for r in fc.not_docked(rows, 3 * DAY)] == []
    assert [r["serial"] for r in fc.not_docked(fc.cameras([a], NOW), 3 * DAY)] == ["C1"]


def test_backlog_lists_stations_over_the_age():
    vs = [fc.station("a", body("a", NOW - 60, 1, pending=4, oldest_s=3 * DAY), None, NOW, T),
          fc.station("b", body("b", NOW - 60, 1, pending=1, oldest_s=60), None, NOW, T),
          fc.station("c", body("c", NOW - 60, 1, pending=9, oldest_s=9 * DAY), "forged", NOW, T)]
    rows = fc.backlog(vs, NOW, 2 * DAY)
    assert [(r["station"], r["pending"]) for r in rows] == [("a", 4)]


@pytest.mark.parametrize("text,s", [("90s", 90), ("30m", 1800), ("12h", 43200), ("3d", 259200), ("1.5d", 129600)])
def test_durations(text, s):
    assert fc.duration(text) == s


@pytest.mark.parametrize("text", ["3", "3w", "-1d", "d", ""])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        fc.duration(text)
