"""The matching rule of the completeness review, as a pure function of its inputs (no I/O, no clock).

For each (incident, officer) row of the dispatch export:

* the **window** is ``[dispatched - pre_roll, cleared + post_roll]`` (station clock, i.e. true time);
* the officer's **cameras** are those the roster assigns to them during the window, each only for the part of
  the window its assignment covers (a camera handed over mid-shift counts for each officer only while theirs);
* each clip is placed at ``started_at - camera_offset_s`` (the station measured the camera clock at the dock
  that copied it; positive offset = camera ahead) for ``duration_s``; a clip whose start or duration is
  unknown cannot be placed and counts for nothing (it is listed as unplaced, never guessed);
* **coverage** is the weighted fraction of the window covered by the union of placed clips: the on-scene part
  (``arrived`` .. ``cleared``, when the export has an arrival time) weighs ``on_scene_weight``, the rest 1.
  Overlapping clips (two cameras, or a camera's overlapping files) are counted once;
* **outcome**, first rule that holds: ``excluded`` (call type exempt by policy), ``covered`` (coverage at
  least ``covered_bp``), ``justified`` (a reviewer's justification is on file), ``pending`` (no camera of
  the officer has docked since the window ended, and the grace period has not run out at ``now``),
  ``partial`` (some coverage), ``missing``.

Coverage only grows when a clip is added, so adding a clip never makes an outcome worse and removing one never
makes it better (tests/unit/review/test_properties.py). Numbers are integers (basis points) so a signed
report is plain JSON that ``jq -cS`` reproduces byte for byte.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

NS = 1_000_000_000
DAY_NS = 86_400 * NS
OUTCOMES = ("covered", "partial", "missing", "justified", "pending", "excluded")
# Anomaly kinds that can explain a missing clip when seen at a dock near the incident.
EXPLAINING = frozenset({"seq_gap", "clip_vanished", "seq_repeated", "time_backwards", "clock_ahead", "seq_wrapped",
                        "long_absence", "device_id_conflict"})


@dataclass(frozen=True, slots=True)
class Policy:
    pre_roll_s: float = 120.0
    post_roll_s: float = 120.0
    grace_s: float = 72 * 3600.0
    covered_bp: int = 9000
    on_scene_weight: float = 2.0
    excluded_call_types: frozenset[str] = frozenset()
    long_absence_days: float = 3.0


@dataclass(frozen=True, slots=True)
class Clip:
    camera: str
    start_ns: int | None  # camera clock
    duration_ns: int | None
    offset_ns: int | None  # camera minus station clock at the dock that copied it
    key: str = ""  # object key in storage (shown in the exception list)

    def station_interval(self) -> tuple[int, int] | None:
        if self.start_ns is None or self.duration_ns is None or self.duration_ns < 0:
            return None
        s = self.start_ns - (self.offset_ns or 0)
        return s, s + self.duration_ns


@dataclass(frozen=True, slots=True)
class Dock:
    camera: str
    at_ns: int  # station clock
    anomalies: tuple[str, ...] = ()  # kinds seen at this dock


@dataclass(frozen=True, slots=True)
class Assignment:
    camera: str
    officer: str
    from_ns: int
    to_ns: int | None  # None: open-ended


@dataclass(frozen=True, slots=True)
class Incident:
    """One (incident, officer) row of the dispatch export."""

    incident: str
    officer: str
    call_type: str
    dispatched_ns: int
    arrived_ns: int | None
    cleared_ns: int
    unit: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class Justification:
    seq: int
    incident: str
    officer: str
    reason: str
    note: str
    by: str
    at: str
    supersedes: int | None = None


@dataclass(slots=True)
class Row:
    incident: str
    officer: str
    unit: str
    call_type: str
    window_from_ns: int
    window_to_ns: int
    cameras: list[str]
    coverage_bp: int
    outcome: str
    clips: list[str] = field(default_factory=list)
    justification: Justification | None = None
    facts: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- interval arithmetic


def union(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged, non-empty intervals."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(i for i in intervals if i[1] > i[0]):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def weighted_coverage(window: tuple[int, int], scene: tuple[int, int] | None, covered: Sequence[tuple[int, int]],
                      weight: float) -> int:
    """Coverage in basis points (floor) of ``window`` by the merged intervals ``covered``; ``scene`` weighs
    ``weight`` instead of 1."""
    def w_len(iv: tuple[int, int]) -> float:
        n = _overlap(iv, window)
        if scene is None or n == 0:
            return float(n)
        sc = _overlap(iv, scene)
        return (n - sc) + sc * weight

    total = w_len(window)
    if total <= 0:
        return 0
    got = sum(w_len(iv) for iv in covered)
    return min(10000, int(got * 10000 // total))


# ---------------------------------------------------------------- the rule


def officer_cameras(assignments: Sequence[Assignment], officer: str, window: tuple[int, int]) -> list[
        tuple[str, tuple[int, int]]]:
    """(camera, part of the window it was the officer's) for each roster entry overlapping the window."""
    out = []
    for a in assignments:
        if a.officer != officer:
            continue
        part = (max(window[0], a.from_ns), min(window[1], a.to_ns if a.to_ns is not None else window[1]))
        if part[1] > part[0]:
            out.append((a.camera, part))
    return out


def outcome_of(coverage_bp: int, policy: Policy, *, excluded: bool, justified: bool, pending: bool) -> str:
    if excluded:
        return "excluded"
    if coverage_bp >= policy.covered_bp:
        return "covered"
    if justified:
        return "justified"
    if pending:
        return "pending"
    return "partial" if coverage_bp > 0 else "missing"


def effective_justifications(entries: Iterable[Justification]) -> dict[tuple[str, str], Justification]:
    """The standing justification per (incident, officer): the newest entry; a later entry supersedes."""
    out: dict[tuple[str, str], Justification] = {}
    for j in sorted(entries, key=lambda j: j.seq):
        out[(j.incident, j.officer)] = j
    return out


def _camera_facts(cam: str, window: tuple[int, int], docks: Sequence[Dock], times: Sequence[int], now_ns: int,
                  policy: Policy, fmt: Callable[[int], str]) -> tuple[list[str], bool]:
    """Facts about ``cam`` that explain a miss, and whether it has docked since the window ended. ``times``
    are the docks' ``at_ns`` (sorted, for bisection)."""
    facts: list[str] = []
    i0 = bisect.bisect_right(times, window[0])  # docks[:i0] are at or before the window start
    i1 = bisect.bisect_left(times, window[1])  # docks[i1:] are at or after its end
    last_before = docks[i0 - 1] if i0 > 0 else None
    first_after = docks[i1] if i1 < len(docks) else None
    # any dock during the window, and the dock that took this window's clips off the camera
    for d in list(docks[i0:i1]) + ([first_after] if first_after else []):
        for kind in d.anomalies:
            if kind in EXPLAINING:
                facts.append(f"{cam}: {kind} at dock {fmt(d.at_ns)}")
    end = first_after.at_ns if first_after else now_ns
    if first_after is None:
        facts.append(f"{cam}: not docked since the incident")
    if last_before is not None and end - last_before.at_ns > policy.long_absence_days * DAY_NS:
        facts.append(f"{cam}: not docked for {(end - last_before.at_ns) / DAY_NS:.1f} days around the incident")
    return facts, first_after is not None


class CameraClips:
    """One camera's placed clips as station-time intervals sorted by start, for bisection: one incident never
    walks a year of the camera's clips."""

    def __init__(self, clips: Iterable[Clip] = (), *, placed: list[tuple[int, int, str]] | None = None):
        """From clips, or from ``placed`` (station-time (start, end, key), already sorted: the cache's
        query gives them so, without a Clip object per clip)."""
        if placed is None:
            placed = []
            for c in clips:
                iv = c.station_interval()
                if iv is not None:
                    placed.append((iv[0], iv[1], c.key))
            placed.sort()
        self.starts = [p[0] for p in placed]
        self.placed = placed
        self.longest = max((p[1] - p[0] for p in placed), default=0)

    def overlapping(self, part: tuple[int, int]) -> Iterable[tuple[int, int, str]]:
        i = bisect.bisect_left(self.starts, part[0] - self.longest)
        while i < len(self.placed) and self.placed[i][0] < part[1]:
            p = self.placed[i]
            if p[1] > part[0]:
                yield p
            i += 1


def review(incidents: Iterable[Incident], assignments: Sequence[Assignment],
           clips: Mapping[str, Iterable[Clip] | CameraClips],
           docks: Mapping[str, Sequence[Dock]], justifications: Mapping[tuple[str, str], Justification],
           policy: Policy, now_ns: int, fmt: Callable[[int], str] = str) -> Iterator[Row]:
    """One :class:`Row` per incident row, in input order. ``clips`` are per camera (any order, or a prepared
    :class:`CameraClips`); ``docks`` per
    camera sorted by ``at_ns``; ``fmt`` renders a time in facts (the caller passes RFC 3339)."""
    by_officer: dict[str, list[Assignment]] = defaultdict(list)
    for a in assignments:
        by_officer[a.officer].append(a)
    indexed: dict[str, CameraClips] = {}
    dock_times = {cam: [d.at_ns for d in ds] for cam, ds in docks.items()}
    pre, post = int(policy.pre_roll_s * NS), int(policy.post_roll_s * NS)
    grace = int(policy.grace_s * NS)
    for inc in incidents:
        window = (inc.dispatched_ns - pre, inc.cleared_ns + post)
        scene = (inc.arrived_ns, inc.cleared_ns) if inc.arrived_ns is not None else None
        cams = officer_cameras(by_officer.get(inc.officer, ()), inc.officer, window)
        spans: list[tuple[int, int]] = []
        keys: set[str] = set()
        facts: list[str] = []
        docked_since = []
        for cam, part in cams:
            cc = indexed.get(cam)
            if cc is None:
                given = clips.get(cam, ())
                cc = indexed[cam] = given if isinstance(given, CameraClips) else CameraClips(given)
            for s, e, key in cc.overlapping(part):
                spans.append((max(s, part[0]), min(e, part[1])))
                keys.add(key)
            f, docked = _camera_facts(cam, window, docks.get(cam, ()), dock_times.get(cam, ()), now_ns, policy, fmt)
            facts.extend(f)
            docked_since.append(docked)
        if not cams:
            facts.append("no camera assigned to the officer during the window (roster)")
        cov = weighted_coverage(window, scene, union(spans), policy.on_scene_weight)
        j = justifications.get((inc.incident, inc.officer))
        pending = bool(cams) and not any(docked_since) and now_ns < window[1] + grace
        out = outcome_of(cov, policy, excluded=inc.call_type in policy.excluded_call_types,
                         justified=j is not None, pending=pending)
        yield Row(incident=inc.incident, officer=inc.officer, unit=inc.unit, call_type=inc.call_type,
                  window_from_ns=window[0], window_to_ns=window[1], cameras=sorted({c for c, _ in cams}),
                  coverage_bp=cov, outcome=out, clips=sorted(keys),
                  justification=j if out == "justified" else None,
                  facts=facts if out not in ("covered", "excluded") else [])


# ---------------------------------------------------------------- clip-index lines (docs/clip-index.md) to facts


def time_ns(text: object) -> int | None:
    """ns since the epoch of an RFC 3339 UTC time as the index writes it; None for null or anything else."""
    from datetime import datetime

    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    try:
        dt = datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        return None
    return (int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond) * 1000


def _seconds_ns(v: object) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v in (float("inf"), float("-inf")):
        return None
    return int(round(v * NS))


def clip_from_line(d: Mapping[str, object]) -> Clip:
    """A clip line of the index as a :class:`Clip` (unknown or malformed times become None: unplaced)."""
    dur = _seconds_ns(d.get("duration_s"))
    return Clip(camera=str(d.get("camera")), start_ns=time_ns(d.get("started_at")),
                duration_ns=dur if dur is not None and dur >= 0 else None,
                offset_ns=_seconds_ns(d.get("camera_offset_s")), key=str(d.get("object_key") or ""))


def dock_from_line(d: Mapping[str, object]) -> Dock | None:
    """A dock line as a :class:`Dock`; None if it has no usable ``docked_at``."""
    at = time_ns(d.get("docked_at"))
    if at is None:
        return None
    kinds = []
    for a in d.get("anomalies") or ():  # type: ignore[attr-defined]
        if isinstance(a, dict) and isinstance(a.get("kind"), str):
            kinds.append(a["kind"])
    return Dock(camera=str(d.get("camera")), at_ns=at, anomalies=tuple(kinds))
