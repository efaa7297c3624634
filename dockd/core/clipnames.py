"""What a camera's clip names say: a sequence number and a start time, read with a profile's pattern.

**Core, no I/O.** A ``[[camera]]`` profile may declare ``names = { pattern, time_format, zone }``: a
regular expression matched against the whole clip path (relative, '/'-separated, as the scan found it),
with the named groups ``seq`` (digits: the camera's running clip number) and/or ``start`` (the start
time, parsed with ``time_format`` as a wall-clock time in ``zone``). The zone object is built by the
caller (reading the zone database is I/O); this module only applies it.

A name the pattern does not match, or whose groups do not parse (a 30th of February, a number too
long to be a count), is *unparsed*: a fact about the clip, never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from dockd.core.timefmt import rfc3339

GROUPS = ("seq", "start")
# A sequence number is a count of clips: more digits than this is not one (and would leave the
# safe-integer range of I-JSON, 2**53).
MAX_SEQ_DIGITS = 15
_PROBE = datetime(2026, 11, 30, 5, 11, 7)  # a time every date-and-time format can write and read back


@dataclass(frozen=True)
class NameRule:
    """A profile's name rule, compiled (see :func:`check_rule` for what makes one valid)."""

    profile: str
    pattern: re.Pattern[str]
    time_format: str | None = None
    zone: tzinfo | None = None


@dataclass(frozen=True)
class NameFacts:
    """What one clip name says under a rule. ``started_at`` is camera-clock epoch seconds (UTC)."""

    profile: str | None
    seq_no: int | None
    started_at: float | None
    parsed: bool

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``name_facts``."""
        return {"profile": self.profile, "seq_no": self.seq_no, "started_at": rfc3339(self.started_at),
                "started_at_source": "name" if self.started_at is not None else None,
                "parsed": self.parsed}


NO_RULE = NameFacts(profile=None, seq_no=None, started_at=None, parsed=False)


def check_rule(pattern: str, time_format: str | None) -> str | None:
    """None if ``pattern`` and ``time_format`` make a usable rule; else why not (one line, for the config error).

    The pattern must compile, name at least one of the groups ``seq`` and ``start`` and no other named
    group; ``time_format`` is required exactly when ``start`` is named, and must write and read back a
    full date and time (year to second), so a start time is never half a guess."""
    try:
        rx = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        return f"pattern is not a valid regular expression: {e}"
    names = set(rx.groupindex)
    unknown = sorted(names - set(GROUPS))
    if unknown:
        return f"pattern has unknown named group {unknown[0]!r} (allowed: seq, start)"
    if not names:
        return "pattern must name a group (?P<seq>...) and/or (?P<start>...)"
    if "start" in names and not time_format:
        return "time_format is required when the pattern has a (?P<start>...) group"
    if "start" not in names and time_format:
        return "time_format given but the pattern has no (?P<start>...) group"
    if time_format:
        if "%" not in time_format:
            return f"time_format {time_format!r} has no % directive"
        try:
            back = datetime.strptime(_PROBE.strftime(time_format), time_format)
        except (ValueError, TypeError):
            back = None
        if back != _PROBE:
            return (f"time_format {time_format!r} does not give a full date and time "
                    "(needs year, month, day, hour, minute and second, e.g. %Y%m%d_%H%M%S)")
    return None


def parse_name(path: str, rule: NameRule | None) -> NameFacts:
    """The facts ``path`` gives under ``rule`` (no rule: nothing parsed, profile None).

    The whole path must match. A ``start`` without a zone is read as UTC."""
    if rule is None:
        return NO_RULE
    unparsed = NameFacts(profile=rule.profile, seq_no=None, started_at=None, parsed=False)
    m = rule.pattern.fullmatch(path)
    if m is None:
        return unparsed
    seq: int | None = None
    started: float | None = None
    g = m.groupdict()
    if "seq" in g:
        s = g["seq"]
        if s is None or not s.isascii() or not s.isdigit() or len(s) > MAX_SEQ_DIGITS:
            return unparsed
        seq = int(s)
    if "start" in g:
        t = g["start"]
        if t is None or rule.time_format is None:
            return unparsed
        try:
            local = datetime.strptime(t, rule.time_format)
            started = local.replace(tzinfo=rule.zone or UTC).astimezone(UTC).timestamp()
        except (ValueError, OverflowError):
            return unparsed
    return NameFacts(profile=rule.profile, seq_no=seq, started_at=started, parsed=True)
