"""File times as integers: the one place a date or an RFC 3339 string is derived from an mtime.

**Core, no I/O.** A clip's mtime comes from the camera's filesystem as an
integer of nanoseconds since the Unix epoch (``st_mtime_ns``); everything
that shows it (object key date, manifest, queue JSON, audit details) derives
from that integer here, with integer arithmetic only. Float seconds
(``ns / 1e9``) round 23:59:59.9999997 up to the next day and -1 ns up to
1970, so a key and its manifest could name different days.

The range is what the queue can store: a signed 64-bit count of nanoseconds
(SQLite ``INTEGER``), i.e. from 1677-09-21T00:12:43.145224192Z to
2262-04-11T23:47:16.854775807Z. Every time in it has a four-digit year, so it
is also a valid RFC 3339 time. A file outside it is skipped by the scan with
the reason (see :func:`check_ns`), never offloaded with a made-up date.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from dockd.core.errors import UsageError

MIN_NS = -(1 << 63)
MAX_NS = (1 << 63) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS = 1_000_000_000


class OutOfRange(ValueError):
    """The time is outside what the queue, JSON and RFC 3339 can hold (signed 64-bit nanoseconds)."""


def check_ns(ns: int) -> str | None:
    """None if ``ns`` is a storable mtime; else the reason, one line, for a skip."""
    if not isinstance(ns, int) or isinstance(ns, bool):
        return f"mtime is not an integer ({type(ns).__name__})"
    if ns < MIN_NS or ns > MAX_NS:
        return (f"mtime out of range ({ns} ns since 1970; storable: "
                f"{rfc3339_ns(MIN_NS)} .. {rfc3339_ns(MAX_NS)})")
    return None


def utc(ns: int) -> tuple[datetime, int]:
    """(UTC time to the second, floored; the nanoseconds past that second, 0..999999999).

    Floor division, so -1 ns is 1969-12-31T23:59:59 + 999999999 ns. Raises
    OutOfRange outside :data:`MIN_NS` .. :data:`MAX_NS`."""
    why = check_ns(ns)
    if why is not None:
        raise OutOfRange(why)
    sec, frac = divmod(ns, _NS)
    return _EPOCH + timedelta(seconds=sec), frac


def date_parts(ns: int) -> tuple[str, str, str]:
    """("YYYY", "MM", "DD") of the UTC day holding ``ns`` (object key directories)."""
    d, _ = utc(ns)
    return f"{d.year:04d}", f"{d.month:02d}", f"{d.day:02d}"


def rfc3339_ns(ns: int) -> str:
    """Nanosecond-exact RFC 3339 UTC time, e.g. ``2026-11-21T05:36:59.245614815Z``."""
    d, frac = utc(ns)
    return (f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
            f".{frac:09d}Z")


@overload
def rfc3339(ts: float) -> str: ...
@overload
def rfc3339(ts: None) -> None: ...
def rfc3339(ts: float | None) -> str | None:
    """Epoch seconds as the stored RFC 3339 UTC form to the millisecond (``2026-11-21T05:37:00.437Z``);
    None stays None. Queue timestamps, audit rows and CLI JSON use this form."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalise_time(text: str) -> str:
    """Any RFC 3339 / ISO 8601 time (``Z`` or offset; naive = UTC) in the stored form, so strings compare
    as times (``...:00Z`` would otherwise sort after ``...:00.500Z``). Raises UsageError otherwise."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{text!r} is not an RFC 3339 time (like 2026-11-21T00:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z$")


def time_ns(text: Any) -> int:
    """Nanoseconds since the epoch of a strict RFC 3339 UTC time (``...Z``); raise ValueError otherwise."""
    m = _TIME.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SS[.f]Z): {text!r}")
    y, mo, d, h, mi, s, frac = m.groups()
    dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))
