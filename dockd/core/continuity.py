"""Continuity at the dock: what a camera's card says about clips that are missing, repeated or misdated.

**Core, no I/O.** At each dock the station compares what it finds on the card with what it knew
about the camera (:class:`Known`: its last dock, the highest sequence number seen, the newest start
time seen, its device id) and with the clips it saw at earlier docks but never copied
(:class:`Pending`). :func:`assess` returns the dock's facts (the ``camera.docked`` audit detail and
the dock line of the clip index), the anomalies, and what the station knows afterwards.

Anomalies are facts for review, never reasons to keep video on a camera. Each one is reported once:
only a clip first seen at this dock (``OnCard.new``) can raise a card anomaly, so a camera docked
again with nothing new (or a second pass over the same dock) reports nothing again. The kinds and
their facts (see docs in README "Continuity at the dock"):

* ``seq_gap`` {from, to, missing, within: "card"|"since_last_dock", path}: numbers absent between two
  numbers on the card, or between the highest number seen at earlier docks and the card;
* ``clip_vanished`` {path, seq_no, seen_at_dock}: seen at an earlier dock, gone before it was copied
  (only when the scan was complete: an incomplete scan proves no absence);
* ``seq_repeated`` {seq_no, paths}; ``time_backwards`` {path, started_at, previous_started_at};
* ``clock_ahead`` {path, started_at, station_time, ahead_s}: dated after the station's clock by more
  than the tolerance;
* ``seq_wrapped`` {last_seq_before, first_seq_after}: a new clip numbered at or below the highest
  number seen before (the camera restarted its numbering: reset or format). Reported, not guessed:
  no gap is computed across a wrap;
* ``long_absence`` {days, last_docked_at}; ``device_id_conflict`` {device_id, cameras};
  ``unparsed_name`` {path}.

**Camera clock offset** (``camera_offset_s``, camera minus station, positive = camera ahead): the
end of the newest clip first seen at this dock (its start from the name, plus its duration where
known) minus the station's time at the dock. The clip ended before the camera was docked, so this
is a *lower bound* of the true offset: it equals the offset only if the camera was docked the
moment the recording stopped, and it under-states a camera clock that is ahead by the time the
camera sat undocked after its last recording. ``None`` when no new clip has a start time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dockd.core.timefmt import rfc3339

DAY_S = 86400.0


@dataclass(frozen=True)
class Known:
    """What the station knew about a camera before this dock (all None for a camera never seen)."""

    last_docked_at: float | None = None  # station clock, epoch s
    last_seq: int | None = None  # highest sequence number seen (since the last wrap)
    newest_started_at: float | None = None  # camera clock, epoch s: newest clip start seen at the last dock
    device_id: str | None = None


@dataclass(frozen=True)
class OnCard:
    """One clip on the card: its path, what its name says, and whether it is first seen at this dock."""

    path: str
    seq_no: int | None = None
    started_at: float | None = None  # camera clock, epoch s
    new: bool = True
    unparsed: bool = False  # a profile pattern exists and this name does not match it
    duration_s: float | None = None


@dataclass(frozen=True)
class Pending:
    """A clip seen at an earlier dock and not yet copied."""

    path: str
    seq_no: int | None
    seen_at: float  # station clock, epoch s: when it was first seen


@dataclass(frozen=True)
class Limits:
    clock_ahead_s: float = 300.0  # a clip dated more than this after the station's clock is "ahead"
    long_absence_days: float = 14.0  # 0 = never report


@dataclass(frozen=True)
class Assessment:
    facts: dict[str, Any]  # the dock facts (without camera, station, bay: the caller adds them)
    anomalies: list[dict[str, Any]]  # each {"kind", ...facts}
    known: Known  # what the station knows after this dock
    kinds_by_path: dict[str, list[str]] = field(default_factory=dict)  # anomaly kinds touching each clip


def _r(x: float) -> float:
    return round(x, 3)


def assess(known: Known, card: Sequence[OnCard], now: float, *, serial: str = "",
           pending: Iterable[Pending] = (), complete: bool = True, device_id: str | None = None,
           device_id_claimed_by: Iterable[str] = (), limits: Limits = Limits()) -> Assessment:
    """The dock's facts and anomalies (see the module docstring). ``now``: the station's clock at the
    dock; ``device_id_claimed_by``: other cameras recorded with ``device_id``; ``complete``: the scan
    saw the whole card."""
    anomalies: list[dict[str, Any]] = []
    by_path: dict[str, list[str]] = {}

    def report(kind: str, clips: Iterable[str] = (), /, **facts: Any) -> None:
        anomalies.append({"kind": kind, **facts})
        for p in clips:
            by_path.setdefault(p, []).append(kind)

    days = _r((now - known.last_docked_at) / DAY_S) if known.last_docked_at is not None else None
    if days is not None and limits.long_absence_days > 0 and days > limits.long_absence_days:
        report("long_absence", days=days, last_docked_at=rfc3339(known.last_docked_at))
    others = sorted(set(device_id_claimed_by) - {serial})
    if device_id is not None and others and device_id != known.device_id:
        report("device_id_conflict", device_id=device_id, cameras=sorted({serial, *others}))

    new = [c for c in card if c.new]
    for c in new:
        if c.unparsed:
            report("unparsed_name", [c.path], path=c.path)
    pending = list(pending)
    if complete:
        here = {c.path for c in card}
        for p in pending:
            if p.path not in here:
                report("clip_vanished", [p.path], path=p.path, seq_no=p.seq_no, seen_at_dock=rfc3339(p.seen_at))

    wrapped, last_seq = _sequence(known.last_seq, card, report, {p.seq_no for p in pending if p.seq_no is not None})
    _times(None if wrapped else known.newest_started_at, card, report, known.last_seq if wrapped else None)
    for c in new:
        if c.started_at is not None and c.started_at - now > limits.clock_ahead_s:
            report("clock_ahead", [c.path], path=c.path, started_at=rfc3339(c.started_at),
                   station_time=rfc3339(now), ahead_s=_r(c.started_at - now))

    seqs = [c.seq_no for c in card if c.seq_no is not None]
    starts = [c.started_at for c in card if c.started_at is not None]
    ends = [c.started_at + (c.duration_s or 0.0) for c in new if c.started_at is not None]
    facts = {
        "docked_at": rfc3339(now),
        "clips_on_card": len(card),
        "clips_new": len(new),
        "seq_min": min(seqs) if seqs else None,
        "seq_max": max(seqs) if seqs else None,
        "newest_clip_at": rfc3339(max(starts)) if starts else None,
        "camera_offset_s": _r(max(ends) - now) if ends else None,
        "days_since_last_dock": days,
        "anomalies": anomalies,
    }
    after = Known(last_docked_at=now, last_seq=last_seq,
                  newest_started_at=max(starts) if starts else known.newest_started_at,
                  device_id=device_id if device_id is not None else known.device_id)
    return Assessment(facts=facts, anomalies=anomalies, known=after, kinds_by_path=by_path)


def _sequence(last: int | None, card: Sequence[OnCard], report: Any, seen: set[int]) -> tuple[bool, int | None]:
    """Repeats, wrap and gaps of the card's numbers (``seen``: numbers of clips seen at earlier docks and
    not copied, which fill their place in the sequence); returns (wrapped, highest number known after)."""
    by_seq: dict[int, list[OnCard]] = {}
    for c in card:
        if c.seq_no is not None:
            by_seq.setdefault(c.seq_no, []).append(c)
    for s in sorted(by_seq):
        group = by_seq[s]
        if len(group) > 1 and any(c.new for c in group):
            paths = sorted(c.path for c in group)
            report("seq_repeated", paths, seq_no=s, paths=paths)
    new_seqs = {s for s, g in by_seq.items() if any(c.new for c in g)}
    old_seqs = {s for s, g in by_seq.items() if not all(c.new for c in g)}
    # A new number at or below the highest seen before (and not a repeat of a clip still on the card):
    # the camera restarted its numbering.
    low = sorted(s for s in new_seqs - old_seqs if last is not None and s <= last)
    if low:
        assert last is not None
        report("seq_wrapped", last_seq_before=last, first_seq_after=low[0])
        _gaps(sorted(set(low)), set(low), by_seq, report)  # the restarted numbering, on its own
        high = sorted({s for s in by_seq if s > last} | {last})
        _gaps(high, set(by_seq), by_seq, report, new_only=new_seqs)
        return True, max(low)
    chain = sorted(set(by_seq) | seen | ({last} if last is not None else set()))
    _gaps(chain, set(by_seq), by_seq, report, new_only=new_seqs)
    return False, chain[-1] if chain else None


def _gaps(chain: list[int], on_card: set[int], by_seq: dict[int, list[OnCard]], report: Any,
          new_only: set[int] | None = None) -> None:
    """A ``seq_gap`` for each hole in ``chain`` whose upper number is new (so it is reported once)."""
    for a, b in zip(chain, chain[1:], strict=False):
        if b - a > 1 and (new_only is None or b in new_only):
            path = min(c.path for c in by_seq[b])
            report("seq_gap", [path], **{"from": a + 1, "to": b - 1, "missing": b - a - 1,
                                         "within": "card" if a in on_card else "since_last_dock", "path": path})


def _times(previous: float | None, card: Sequence[OnCard], report: Any, wrapped_after: int | None) -> None:
    """``time_backwards``: a new clip that starts before the clip before it (by number, then path; after a
    wrap past ``wrapped_after`` the restarted numbers come last); the first one is compared with the newest
    start seen at the last dock (not across a wrap)."""
    def order(c: OnCard) -> tuple[bool, bool, int, str]:
        restarted = wrapped_after is not None and c.seq_no is not None and c.seq_no <= wrapped_after
        return (c.seq_no is None, restarted, c.seq_no or 0, c.path)

    ordered = sorted((c for c in card if c.started_at is not None), key=order)
    for c in ordered:
        assert c.started_at is not None
        if c.new and previous is not None and c.started_at < previous:
            report("time_backwards", [c.path], path=c.path, started_at=rfc3339(c.started_at),
                   previous_started_at=rfc3339(previous))
        previous = c.started_at
