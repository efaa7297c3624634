"""The station's clock state, as the kernel reports it: interpretation only. Pure: no I/O.

:mod:`dockd.evidence.stationclock` reads ``adjtimex(2)`` read-only (``modes =
0``) and passes the numbers here. :func:`facts` gives the ``station_clock``
member of each signed manifest::

    {"synchronised": bool, "est_error_us": int|null, "max_error_us": int|null,
     "status": int, "source": "adjtimex"}

The kernel's NTP discipline says the clock is *not* synchronised when the
call returns ``TIME_ERROR`` (5) or the status word has ``STA_UNSYNC`` (0x40)
set: no time daemon has told it the clock is good (or it said so more than
``maxerror`` allowed ago). ``est_error_us`` / ``max_error_us`` are the
kernel's estimated and maximum error in microseconds, recorded as they are
(also when unsynchronised: they are what the kernel believed); a value out
of range for a signed 64-bit integer or negative is null.

When the call is unavailable (not Linux, a sandbox refusing it):
:func:`unavailable`, ``synchronised`` false and ``source`` ``"unavailable"``;
nothing claims a synchronisation that was not seen.
"""

from __future__ import annotations

from typing import Any

TIME_OK, TIME_INS, TIME_DEL, TIME_OOP, TIME_WAIT, TIME_ERROR = range(6)
STA_UNSYNC = 0x0040
SOURCE = "adjtimex"
_MAX_US = (1 << 63) - 1


def _us(v: int) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_US else None


def synchronised(state: int, status: int) -> bool:
    """The kernel's view: synchronised unless ``TIME_ERROR`` or ``STA_UNSYNC`` (or a negative state: the
    call failed)."""
    return 0 <= state != TIME_ERROR and not status & STA_UNSYNC


def facts(state: int, status: int, esterror: int, maxerror: int) -> dict[str, Any]:
    """``station_clock`` from adjtimex's return value (``state``) and ``timex`` fields."""
    return {"synchronised": synchronised(state, status), "est_error_us": _us(esterror),
            "max_error_us": _us(maxerror), "status": int(status), "source": SOURCE}


def unavailable() -> dict[str, Any]:
    """``station_clock`` when the kernel could not be asked."""
    return {"synchronised": False, "est_error_us": None, "max_error_us": None, "status": -1,
            "source": "unavailable"}


def summary(clock: Any) -> str:
    """One line for ``dockd show``: ``synchronised, est. error 1234 us (max 56789 us)`` or
    ``NOT synchronised (...)``."""
    if not isinstance(clock, dict):
        return "not recorded"
    if clock.get("source") != SOURCE:
        return "unknown (adjtimex unavailable)"
    head = "synchronised" if clock.get("synchronised") is True else "NOT synchronised"
    return (f"{head}, est. error {clock.get('est_error_us')} us (max {clock.get('max_error_us')} us), "
            f"kernel status 0x{int(clock.get('status') or 0) & 0xFFFFFFFF:04x}")
