"""Bad input to the review: every malformed roster or CAD row is one UsageError (exit 2) naming the file, the
line and the field; overlapping and open-ended roster entries are handled and reported."""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dockd.agency.review import inputs
from dockd.core.errors import EXIT_USAGE, UsageError

UTC = ZoneInfo("UTC")
CAD_HEAD = "incident,call_type,dispatched,arrived,cleared,officer,unit\n"
ROSTER_HEAD = "camera,officer,from,to\n"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


CAD_BAD = [
    ("no header", "", "empty"),
    ("missing column", "incident,call_type\nI1,A\n", "line 1: no column dispatched"),
    ("short row", CAD_HEAD + "I1,A,2026-03-01T10:00:00Z\n", "line 2: 3 fields"),
    ("bad time", CAD_HEAD + "I1,A,yesterday,,2026-03-01T10:10:00Z,O1,U\n", "line 2: field dispatched: not a time"),
    ("empty officer", CAD_HEAD + "I1,A,2026-03-01T10:00:00Z,,2026-03-01T10:10:00Z, ,U\n",
     "line 2: field officer: empty"),
    ("clear before dispatch", CAD_HEAD + "I1,A,2026-03-01T10:00:00Z,,2026-03-01T09:00:00Z,O1,U\n",
     "line 2: field cleared: before dispatch"),
    ("arrive after clear", CAD_HEAD + "I1,A,2026-03-01T10:00:00Z,2026-03-01T11:00:00Z,2026-03-01T10:10:00Z,O1,U\n",
     "line 2: field arrived: not between"),
    ("control char", CAD_HEAD + "I1\u202e,A,2026-03-01T10:00:00Z,,2026-03-01T10:10:00Z,O1,U\n",
     "line 2: field incident: holds a control"),
    ("not utf-8", CAD_HEAD.encode() + b"I1,\xff\n", "not UTF-8"),
    ("NUL", CAD_HEAD + "I1\x00,A\n", "NUL"),
    ("bad quoting", CAD_HEAD + 'I1,"A"x,2026-03-01T10:00:00Z,,2026-03-01T10:10:00Z,O1,U\n', "line 2: not valid CSV"),
    ("huge field", CAD_HEAD + "I1," + "A" * 5000 + ",2026-03-01T10:00:00Z,,2026-03-01T10:10:00Z,O1,U\n",
     "field call_type: longer than"),
    ("line 3 of 3", CAD_HEAD + "I1,A,2026-03-01T10:00:00Z,,2026-03-01T10:10:00Z,O1,U\nI2,A,2026-03-01T10:00:00Z,,"
     "2026-03-01T10:10:00Z,O1,U\nI3,A,2026-03-01T10:00:00Z,,never,O1,U\n", "line 4: field cleared: not a time"),
]


@pytest.mark.parametrize("name,text,want", CAD_BAD, ids=[c[0] for c in CAD_BAD])
def test_bad_cad_is_one_line_naming_file_line_field(tmp_path, name, text, want):
    p = write(tmp_path, "cad.csv", text)
    with pytest.raises(UsageError) as e:
        inputs.load_cad(p, inputs.CadColumns(unit="unit"), UTC)
    msg = str(e.value)
    assert e.value.exit_code == EXIT_USAGE and "\n" not in msg
    assert msg.startswith(f"CAD export {p}") and want in msg, msg


ROSTER_BAD = [
    ("missing column", "camera,officer,from\n", "no column to"),
    ("bad from", ROSTER_HEAD + "C1,O1,soon,\n", "line 2: field from: not a time"),
    ("to before from", ROSTER_HEAD + "C1,O1,2026-03-01T10:00:00Z,2026-03-01T09:00:00Z\n",
     "line 2: field to: not after"),
    ("empty camera", ROSTER_HEAD + ",O1,2026-03-01T10:00:00Z,\n", "line 2: field camera: empty"),
    ("escape in name", ROSTER_HEAD + "C1,O1,\x1b[2Jsoon,\n", "\\x1b"),
]


@pytest.mark.parametrize("name,text,want", ROSTER_BAD, ids=[c[0] for c in ROSTER_BAD])
def test_bad_roster_is_one_line_naming_file_line_field(tmp_path, name, text, want):
    p = write(tmp_path, "roster.csv", text)
    with pytest.raises(UsageError) as e:
        inputs.load_roster(p, UTC)
    assert e.value.exit_code == EXIT_USAGE and str(e.value).startswith(f"roster {p}") and want in str(e.value)
    assert "\x1b" not in str(e.value)


def test_input_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "cad.csv"
    os.mkfifo(fifo)
    with pytest.raises(UsageError):
        inputs.load_cad(fifo, inputs.CadColumns(), UTC)
    real = write(tmp_path, "real.csv", ROSTER_HEAD)
    (tmp_path / "link.csv").symlink_to(real)
    with pytest.raises(UsageError, match="symbolic link"):
        inputs.load_roster(tmp_path / "link.csv", UTC)


def test_roster_open_ended_and_overlapping_are_handled_and_reported(tmp_path):
    p = write(tmp_path, "roster.csv", ROSTER_HEAD
              + "C1,O1,2026-03-01T06:00:00Z,\n"
              + "C1,O2,2026-03-01T14:00:00Z,2026-03-01T22:00:00Z\n"
              + "C1,O3,2026-03-01T20:00:00Z,2026-03-02T02:00:00Z\n")
    roster, _, loaded = inputs.load_roster(p, UTC)
    by = {a.officer: a for a in roster}
    assert by["O1"].to_ns == by["O2"].from_ns  # the open-ended entry closed where the next begins
    assert any("line 2: open-ended" in n for n in loaded.notes)
    assert any("lines 3 and 4" in n and "at once" in n for n in loaded.notes)
    assert len(loaded.sha256) == 64


def test_local_times_use_the_configured_zone(tmp_path):
    p = write(tmp_path, "cad.csv", CAD_HEAD + "I1,A,2026-03-01 10:00:00,,2026-03-01 10:10,O1,U\n")
    (inc,), _ = inputs.load_cad(p, inputs.CadColumns(unit="unit"), ZoneInfo("America/New_York"))
    assert inc.dispatched_ns == inputs.parse_time("2026-03-01T15:00:00Z", UTC)
    with pytest.raises(UsageError, match="unknown time zone"):
        inputs.zone("Mars/Olympus")
