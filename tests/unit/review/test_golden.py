"""Golden files of the review's matching rule: a small roster, CAD export and clip index (golden/day/), one
expected row per (incident, officer): pre/post-roll, overlapping clips, two officers on one incident, a
camera clock an hour ahead, a camera handed over mid-shift, on-scene weight, pending within grace, a camera
not docked past grace, an excluded call type, a superseded justification, an officer with no camera."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dockd.agency.review import inputs, match

HERE = Path(__file__).parent / "golden" / "day"
COLS = inputs.CadColumns(incident="Incident No", call_type="Nature", dispatched="Disp", arrived="OnScene",
                         cleared="Clr", officer="Badge", unit="Unit")


def rfc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_case(d: Path) -> list[match.Row]:
    case = json.loads((d / "case.json").read_text())
    pol = dict(case["policy"])
    pol["excluded_call_types"] = frozenset(pol["excluded_call_types"])
    policy = match.Policy(**pol)
    roster, _, _ = inputs.load_roster(d / "roster.csv", ZoneInfo("UTC"))
    incidents, _ = inputs.load_cad(d / "cad.csv", COLS, ZoneInfo("UTC"))
    clips: dict[str, list[match.Clip]] = {}
    docks: dict[str, list[match.Dock]] = {}
    for line in (d / "index.jsonl").read_text().splitlines():
        o = json.loads(line)
        if o["type"] == "clip":
            clips.setdefault(o["camera"], []).append(match.clip_from_line(o))
        else:
            dk = match.dock_from_line(o)
            assert dk is not None
            docks.setdefault(o["camera"], []).append(dk)
    for v in docks.values():
        v.sort(key=lambda x: x.at_ns)
    js = match.effective_justifications(match.Justification(**j) for j in case["justifications"])
    now = match.time_ns(case["now"])
    assert now is not None
    return list(match.review(incidents, roster, clips, docks, js, policy, now, rfc))


def expected(d: Path) -> list[dict[str, str]]:
    with open(d / "expected.csv", newline="") as f:
        return list(csv.DictReader(f))


def as_golden(r: match.Row) -> dict[str, str]:
    return {"incident": r.incident, "officer": r.officer, "outcome": r.outcome, "coverage_bp": str(r.coverage_bp),
            "cameras": ";".join(r.cameras), "justification": str(r.justification.seq) if r.justification else "",
            "facts": " | ".join(r.facts)}


ROWS = expected(HERE)


@pytest.fixture(scope="module")
def got() -> dict[tuple[str, str], dict[str, str]]:
    return {(r.incident, r.officer): as_golden(r) for r in run_case(HERE)}


@pytest.mark.parametrize("want", ROWS, ids=[f"{r['incident']}/{r['officer']}" for r in ROWS])
def test_golden_row(got, want):
    assert got[(want["incident"], want["officer"])] == want


def test_golden_covers_every_row_and_outcome(got):
    assert len(got) == len(ROWS) == 15
    assert {r["outcome"] for r in ROWS} == set(match.OUTCOMES)


def test_golden_justification_shown_is_the_superseding_one():
    rows = {(r.incident, r.officer): r for r in run_case(HERE)}
    j = rows[("I-JUST", "O2")].justification
    assert j is not None and (j.seq, j.reason, j.supersedes) == (2, "battery", 1)


def test_clock_offset_is_what_covers_it():
    """Without the station's clock fact the camera-ahead clip falls an hour after the incident."""
    c = match.Clip("CAM-B", match.time_ns("2026-03-01T13:58:00Z"), 840 * match.NS, None)
    iv = c.station_interval()
    assert iv is not None and rfc(iv[0]) == "2026-03-01T13:58:00Z"
    c2 = match.Clip("CAM-B", c.start_ns, c.duration_ns, 3600 * match.NS)
    iv2 = c2.station_interval()
    assert iv2 is not None and rfc(iv2[0]) == "2026-03-01T12:58:00Z"
