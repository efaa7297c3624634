"""Reading the station's clock state from the kernel: ``adjtimex(2)`` with ``modes = 0`` (read-only).

One system call, no privilege needed (``modes = 0`` changes nothing, so an
unprivileged daemon may ask). The interpretation (synchronised or not, the
error bounds) is :mod:`dockd.core.clockfacts`; this module only fills the
``struct timex`` through ctypes. Where the call is missing or refused the
result is :func:`dockd.core.clockfacts.unavailable`, never an exception.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

from dockd.core import clockfacts


class Timex(ctypes.Structure):
    """``struct timex`` of <sys/timex.h> (Linux, LP64 and ILP32 alike: ``long`` fields, natural alignment,
    eleven trailing padding ints)."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


_adjtimex: Any = None


def _fn() -> Any:
    global _adjtimex
    if _adjtimex is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        f = libc.adjtimex
        f.argtypes = [ctypes.POINTER(Timex)]
        f.restype = ctypes.c_int
        _adjtimex = f
    return _adjtimex


def read() -> dict[str, Any]:
    """The ``station_clock`` facts now (see :mod:`dockd.core.clockfacts`); ``unavailable`` if the kernel
    cannot be asked."""
    if not sys.platform.startswith("linux"):
        return clockfacts.unavailable()
    try:
        tx = Timex()
        tx.modes = 0  # read only: never adjusts the clock
        state = _fn()(ctypes.byref(tx))
    except (OSError, AttributeError):
        return clockfacts.unavailable()
    if state < 0:
        return clockfacts.unavailable()
    return clockfacts.facts(state, tx.status, tx.esterror, tx.maxerror)
