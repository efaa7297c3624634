"""What the fleet view says about a station, a camera and a backlog: pure functions of verified heartbeats.

No I/O and no clock: ``now`` (epoch seconds) and the thresholds are arguments, so every verdict is
table-tested (tests/unit/test_fleet_classify.py). The input is what :mod:`dockd.agency.fleet.reader`
verified; a station whose newest heartbeat failed verification is ``untrusted`` whatever that
heartbeat claims, and its cameras are not listed from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dockd.core.lifecycle import PENDING
from dockd.core.timefmt import time_ns

UP, STALE, UNHEALTHY, UNTRUSTED, SILENT = "up", "stale", "unhealthy", "untrusted", "no-heartbeat"
STATUSES = (UP, STALE, UNHEALTHY, UNTRUSTED, SILENT)
CLOCK_AHEAD_S = 300  # a heartbeat signed this far in our future: the station clock is wrong
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Thresholds:
    stale_s: float = 15 * 60
    backlog_s: float = 24 * 3600
    low_free_bytes: int = 10 << 30
    audit_overdue_s: float = 48 * 3600

    @classmethod
    def from_config(cls, fleet: Any) -> Thresholds:
        return cls(stale_s=fleet.stale_minutes * 60, backlog_s=fleet.backlog_hours * 3600,
                   low_free_bytes=int(fleet.low_free_gb * (1 << 30)),
                   audit_overdue_s=fleet.audit_export_overdue_hours * 3600)


@dataclass(frozen=True)
class StationVerdict:
    station: str
    status: str
    reasons: tuple[str, ...] = ()
    age_s: float | None = None  # since the newest verified heartbeat's signing time
    heartbeat: dict[str, Any] | None = field(default=None, compare=False)


def duration(text: str) -> float:
    """``30m``, ``12h``, ``3d`` (also ``90s``) in seconds; ValueError for anything else."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a duration like 30m, 12h or 3d")
    return float(m.group(1)) * _UNIT[m.group(2)]


def seconds(at: Any) -> float | None:
    """An RFC 3339 UTC time from a heartbeat as epoch seconds; None if absent or malformed."""
    try:
        return time_ns(at) / 1e9
    except (ValueError, TypeError):
        return None


def pending(hb: dict[str, Any]) -> int:
    """Clips not yet in storage according to the heartbeat's queue counts."""
    q = hb.get("queue") or {}
    return sum(int(q.get(str(s), 0)) for s in PENDING)


def oldest_pending_s(hb: dict[str, Any], now: float) -> float | None:
    """Age now of the oldest clip not yet uploaded (its age when signed plus the heartbeat's age)."""
    age, at = hb.get("oldest_pending_age_s"), seconds(hb.get("at"))
    if age is None or at is None:
        return None
    return float(age) + max(0.0, now - at)


def _health(hb: dict[str, Any], now: float, t: Thresholds) -> list[str]:
    why = []
    for a in hb.get("alarms") or []:
        why.append(f"alarm {a.get('kind')}: {a.get('message')}")
    old = oldest_pending_s(hb, now)
    if old is not None and old > t.backlog_s:
        why.append(f"backlog: oldest clip not uploaded for {human_age(old)} ({pending(hb)} pending)")
    q = hb.get("queue") or {}
    if q.get("failed") or q.get("quarantined"):
        why.append(f"{q.get('failed', 0)} failed, {q.get('quarantined', 0)} quarantined clips")
    if t.low_free_bytes and int(hb.get("free_bytes", 0)) < t.low_free_bytes:
        why.append(f"low space: {int(hb.get('free_bytes', 0)) >> 20} MiB free")
    st = hb.get("storage")
    if isinstance(st, dict) and st.get("reachable") is False:
        why.append("storage unreachable from the station")
    audit = hb.get("audit") or {}
    exported, head = seconds(audit.get("last_export_at")), seconds(audit.get("last_head_at"))
    if exported is not None and now - exported > t.audit_overdue_s:
        why.append(f"audit export overdue: last {human_age(now - exported)} ago")
    elif exported is None and head is not None and now - head > t.audit_overdue_s:
        why.append("audit export overdue: never exported")
    return why


def station(name: str, hb: dict[str, Any] | None, problem: str | None, now: float, t: Thresholds) -> StationVerdict:
    """The verdict on one station from its newest verified heartbeat (``hb``) and the reason its newest
    object failed verification (``problem``), if it did."""
    at = seconds(hb.get("at")) if hb else None
    age = None if at is None else now - at
    if problem is not None:
        return StationVerdict(name, UNTRUSTED, (problem,), age, hb)
    if hb is None or age is None:
        return StationVerdict(name, SILENT, ("no verified heartbeat",), None, hb)
    if age > t.stale_s:
        return StationVerdict(name, STALE, (f"last heartbeat {human_age(age)} ago",), age, hb)
    why = _health(hb, now, t)
    if age < -CLOCK_AHEAD_S:
        why.append(f"station clock {human_age(-age)} ahead")
    return StationVerdict(name, UNHEALTHY if why else UP, tuple(why), age, hb)


def cameras(verdicts: list[StationVerdict], now: float) -> list[dict[str, Any]]:
    """Every camera in a trusted heartbeat, once, where it docked last (newest ``last_dock`` wins)."""
    best: dict[str, dict[str, Any]] = {}
    for v in verdicts:
        if v.status == UNTRUSTED or v.heartbeat is None:
            continue
        for c in v.heartbeat.get("cameras") or []:
            last = seconds(c.get("last_dock"))
            row = {"serial": c.get("serial"), "station": v.station, "bay": c.get("bay"), "state": c.get("state"),
                   "docked": bool(c.get("docked")), "last_dock": c.get("last_dock"),
                   "since_dock_s": None if last is None else max(0.0, now - last),
                   "anomalies": list(c.get("anomalies") or []), "clock_offset_s": c.get("clock_offset_s")}
            old = best.get(row["serial"])
            if old is None or (old["last_dock"] or "") < (row["last_dock"] or ""):
                best[row["serial"]] = row
    return sorted(best.values(), key=lambda r: (r["station"], str(r["serial"])))


def not_docked(rows: list[dict[str, Any]], for_s: float) -> list[dict[str, Any]]:
    """Cameras not docked now whose last dock is older than ``for_s`` (or unknown)."""
    return [r for r in rows if not r["docked"] and (r["since_dock_s"] is None or r["since_dock_s"] > for_s)]


def backlog(verdicts: list[StationVerdict], now: float, older_than_s: float) -> list[dict[str, Any]]:
    """Stations (trusted heartbeats only) holding a clip not uploaded for longer than ``older_than_s``."""
    out = []
    for v in verdicts:
        if v.status == UNTRUSTED or v.heartbeat is None:
            continue
        old = oldest_pending_s(v.heartbeat, now)
        if old is not None and old > older_than_s:
            out.append({"station": v.station, "pending": pending(v.heartbeat), "oldest_pending_s": old,
                        "heartbeat_at": v.heartbeat.get("at")})
    return sorted(out, key=lambda r: -r["oldest_pending_s"])


def human_age(s: float) -> str:
    s = max(0.0, s)
    if s < 120:
        return f"{int(s)}s"
    if s < 7200:
        return f"{int(s // 60)}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"
