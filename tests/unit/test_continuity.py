"""Continuity at the dock (dockd.core.continuity) and clip names (dockd.core.clipnames): tables, no I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from dockd.core.clipnames import NameRule, check_rule, parse_name
from dockd.core.continuity import Known, Limits, OnCard, Pending, assess

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC).timestamp()
H = 3600.0
DAY = 86400.0


def clip(seq, *, t=None, new=True, path=None, unparsed=False, dur=None):
    return OnCard(path or f"DCIM/100MEDIA/FILE{seq:04d}.MP4", seq, None if t is None else NOW + t, new, unparsed, dur)


def kinds(a):
    return [x["kind"] for x in a.anomalies]


def only(a, kind):
    got = [x for x in a.anomalies if x["kind"] == kind]
    assert len(got) == 1, a.anomalies
    return {k: v for k, v in got[0].items() if k != "kind"}


K = Known(last_docked_at=NOW - DAY, last_seq=5, newest_started_at=NOW - 2 * H)

# (name, known, card, pending, expected kinds, facts of the first expected kind or None)
TABLE = [
    ("first dock, clean", Known(), [clip(1, t=-3 * H), clip(2, t=-2 * H)], [], [], None),
    ("continues", K, [clip(6, t=-H), clip(7, t=-0.5 * H)], [], [], None),
    ("gap within the card", Known(), [clip(1, t=-3 * H), clip(4, t=-H)], [], ["seq_gap"],
     {"from": 2, "to": 3, "missing": 2, "within": "card", "path": "DCIM/100MEDIA/FILE0004.MP4"}),
    ("gap since the last dock", K, [clip(9, t=-H)], [], ["seq_gap"],
     {"from": 6, "to": 8, "missing": 3, "within": "since_last_dock", "path": "DCIM/100MEDIA/FILE0009.MP4"}),
    ("old gap not repeated", K, [clip(1, new=False), clip(4, new=False), clip(6, t=-H)], [], [], None),
    ("vanished", K, [clip(7, t=-H)], [Pending("DCIM/100MEDIA/FILE0006.MP4", 6, NOW - DAY)], ["clip_vanished"],
     {"path": "DCIM/100MEDIA/FILE0006.MP4", "seq_no": 6, "seen_at_dock": "2026-11-29T12:00:00.000Z"}),
    ("pending still there", K, [clip(6, t=-2 * H, new=False), clip(7, t=-H)],
     [Pending("DCIM/100MEDIA/FILE0006.MP4", 6, NOW - DAY)], [], None),
    ("repeated", K, [clip(6, t=-2 * H), clip(6, t=-H, path="DCIM/101MEDIA/FILE0006.MP4")], [], ["seq_repeated"],
     {"seq_no": 6, "paths": ["DCIM/100MEDIA/FILE0006.MP4", "DCIM/101MEDIA/FILE0006.MP4"]}),
    ("time backwards on the card", K, [clip(6, t=-H), clip(7, t=-2 * H)], [], ["time_backwards"],
     {"path": "DCIM/100MEDIA/FILE0007.MP4", "started_at": "2026-11-30T10:00:00.000Z",
      "previous_started_at": "2026-11-30T11:00:00.000Z"}),
    ("time backwards since the last dock", K, [clip(6, t=-3 * H)], [], ["time_backwards"],
     {"path": "DCIM/100MEDIA/FILE0006.MP4", "started_at": "2026-11-30T09:00:00.000Z",
      "previous_started_at": "2026-11-30T10:00:00.000Z"}),
    ("clock ahead", K, [clip(6, t=2 * H)], [], ["clock_ahead"],
     {"path": "DCIM/100MEDIA/FILE0006.MP4", "started_at": "2026-11-30T14:00:00.000Z",
      "station_time": "2026-11-30T12:00:00.000Z", "ahead_s": 7200.0}),
    ("ahead within tolerance", K, [clip(6, t=60)], [], [], None),
    ("wrapped", K, [clip(1, t=-H), clip(2, t=-0.5 * H)], [], ["seq_wrapped"],
     {"last_seq_before": 5, "first_seq_after": 1}),
    ("wrapped with a gap after", K, [clip(1, t=-H), clip(3, t=-0.5 * H)], [], ["seq_wrapped", "seq_gap"],
     {"last_seq_before": 5, "first_seq_after": 1}),
    ("wrapped at 9999", Known(NOW - DAY, 9998, NOW - 3 * H), [clip(9999, t=-2 * H), clip(1, t=-H)], [],
     ["seq_wrapped"], {"last_seq_before": 9998, "first_seq_after": 1}),
    ("long absence", Known(NOW - 20 * DAY, 5, NOW - 21 * DAY), [clip(6, t=-H)], [], ["long_absence"],
     {"days": 20.0, "last_docked_at": "2026-11-10T12:00:00.000Z"}),
    ("unparsed", K, [OnCard("DCIM/100MEDIA/NOTES.MP4", unparsed=True)], [], ["unparsed_name"],
     {"path": "DCIM/100MEDIA/NOTES.MP4"}),
    ("unparsed, seen before", K, [OnCard("DCIM/100MEDIA/NOTES.MP4", unparsed=True, new=False)], [], [], None),
]


@pytest.mark.parametrize(("name", "known", "card", "pending", "want", "facts"), TABLE, ids=[t[0] for t in TABLE])
def test_assess_table(name, known, card, pending, want, facts):
    a = assess(known, card, NOW, serial="CAM1", pending=pending)
    assert kinds(a) == want
    if facts is not None:
        assert only(a, want[0]) == facts


def test_each_anomaly_is_reported_once_across_docks():
    """A dock with every kind, then the same card again with nothing new: nothing repeated."""
    card = [clip(1, t=-5 * H), clip(3, t=-4 * H), clip(3, t=-3 * H, path="DCIM/101MEDIA/FILE0003.MP4"),
            clip(4, t=-6 * H), clip(5, t=3 * H), OnCard("DCIM/X.MP4", unparsed=True)]
    first = assess(Known(NOW - 30 * DAY, 0, None, "dev-1"), card, NOW, serial="CAM1",
                   pending=[Pending("DCIM/100MEDIA/FILE0002.MP4", 2, NOW - 30 * DAY)],
                   device_id="dev-1", device_id_claimed_by=["CAM2"])
    assert sorted(kinds(first)) == ["clip_vanished", "clock_ahead", "long_absence", "seq_repeated",
                                    "time_backwards", "unparsed_name"]
    again = [OnCard(c.path, c.seq_no, c.started_at, False, c.unparsed) for c in card]
    second = assess(first.known, again, NOW + H, serial="CAM1", device_id="dev-1", device_id_claimed_by=["CAM2"])
    assert second.anomalies == [] and second.facts["clips_new"] == 0 and second.facts["camera_offset_s"] is None
    assert second.known.last_seq == 5 and second.known.last_docked_at == NOW + H


def test_device_id_conflict_reported_when_first_claimed():
    a = assess(Known(), [], NOW, serial="CAM1", device_id="dev-9", device_id_claimed_by=["CAM2", "CAM1"])
    assert only(a, "device_id_conflict") == {"device_id": "dev-9", "cameras": ["CAM1", "CAM2"]}
    b = assess(a.known, [], NOW + H, serial="CAM1", device_id="dev-9", device_id_claimed_by=["CAM2"])
    assert b.anomalies == []
    assert assess(Known(), [], NOW, serial="CAM1", device_id="dev-9").anomalies == []


def test_incomplete_scan_proves_no_vanishing():
    a = assess(K, [], NOW, pending=[Pending("DCIM/A.MP4", 6, NOW - DAY)], complete=False)
    assert a.anomalies == []


def test_dock_facts_and_offset():
    a = assess(K, [clip(6, t=-H, dur=600.0), clip(7, t=-0.5 * H, dur=60.0), clip(5, t=-3 * H, new=False)], NOW)
    f = a.facts
    assert (f["clips_on_card"], f["clips_new"], f["seq_min"], f["seq_max"]) == (3, 2, 5, 7)
    assert f["newest_clip_at"] == "2026-11-30T11:30:00.000Z" and f["days_since_last_dock"] == 1.0
    assert f["camera_offset_s"] == -1740.0  # newest new clip ended 29 min before the dock (a lower bound)
    assert f["docked_at"] == "2026-11-30T12:00:00.000Z" and f["anomalies"] == []
    assert a.known == Known(NOW, 7, NOW - 0.5 * H, None)
    assert a.kinds_by_path == {}


def test_long_absence_off_and_kinds_by_path():
    a = assess(Known(NOW - 99 * DAY), [clip(1, t=H * 3)], NOW, limits=Limits(clock_ahead_s=0, long_absence_days=0))
    assert kinds(a) == ["clock_ahead"] and a.kinds_by_path == {"DCIM/100MEDIA/FILE0001.MP4": ["clock_ahead"]}


# ---------------------------------------------------------------- names

GENERIC = NameRule("generic", re.compile(r"DCIM/\d{3}MEDIA/FILE(?P<seq>\d{4})\.MP4"))
DATED = NameRule("dated", re.compile(r"DCIM/(?P<start>\d{8}_\d{6})_(?P<seq>\d{4})\.MP4"), "%Y%m%d_%H%M%S",
                 ZoneInfo("America/New_York"))

NAMES = [
    (GENERIC, "DCIM/100MEDIA/FILE0042.MP4", (42, None, True)),
    (GENERIC, "DCIM/100MEDIA/FILE42.MP4", (None, None, False)),
    (GENERIC, "DCIM/100MEDIA/FILE0042.MP4.bak", (None, None, False)),
    (DATED, "DCIM/20261130_051107_0007.MP4", (7, "2026-11-30T10:11:07.000Z", True)),
    (DATED, "DCIM/20260701_120000_0008.MP4", (8, "2026-07-01T16:00:00.000Z", True)),  # daylight saving
    (DATED, "DCIM/20260230_120000_0009.MP4", (None, None, False)),  # no 30th of February
    (None, "DCIM/anything.MP4", (None, None, False)),
]


@pytest.mark.parametrize(("rule", "path", "want"), NAMES)
def test_parse_name(rule, path, want):
    f = parse_name(path, rule)
    j = f.to_json()
    assert (j["seq_no"], j["started_at"], j["parsed"]) == want
    assert j["profile"] == (rule.profile if rule else None)
    assert j["started_at_source"] == ("name" if want[1] else None)


RULES = [
    (r"FILE(?P<seq>\d+)\.MP4", None, None),
    (r"(?P<start>\d{8}_\d{6})", "%Y%m%d_%H%M%S", None),
    (r"FILE(?P<seq>\d+", None, "not a valid regular expression"),
    (r"FILE\d+\.MP4", None, "must name a group"),
    (r"(?P<seq>\d+)(?P<cam>\w+)", None, "unknown named group 'cam'"),
    (r"(?P<start>\d+)", None, "time_format is required"),
    (r"(?P<seq>\d+)", "%Y", "no (?P<start>...) group"),
    (r"(?P<start>\d+)", "%H%M%S", "full date and time"),
    (r"(?P<start>\d+)", "YYYYMMDD", "no % directive"),
]


@pytest.mark.parametrize(("pattern", "fmt", "why"), RULES)
def test_check_rule(pattern, fmt, why):
    got = check_rule(pattern, fmt)
    assert (got is None) if why is None else (why in got)
