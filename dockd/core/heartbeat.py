"""Station heartbeats: their object keys, their bounds and their shape. No I/O.

**Core, no I/O.** The station (:mod:`dockd.station.heartbeat`) builds and writes heartbeats, the agency's
fleet view (:mod:`dockd.agency.fleet`) reads them; both take the layout and the checks from here.

Layout (one object per heartbeat, never overwritten, so there is no "latest" pointer anyone can roll back)::

    {prefix}/_fleet/heartbeats/station={S}/{YYYY-MM-DD}/{HHMMSS}-{seq:016d}.json
    {prefix}/_fleet/stations/{S}          # written once: makes the station known without a full listing

* The date and time in the key are the station's signed ``at`` (UTC); ``seq`` is the signed sequence number.
  The reader rejects an object whose key does not match its signed body (a copy under another name is a
  replay) and one whose ``seq`` is not above the newest it has already verified for that station.
* A day's heartbeats sit under one folder, so the reader lists only today's (or, the first time, the last
  few days' folders), and afterwards only what sorts after the last key it verified (S3 ``StartAfter``).
* Old heartbeats expire by an S3 lifecycle rule on ``{prefix}/_fleet/heartbeats/`` (README "Fleet").
"""

from __future__ import annotations

import re
from typing import Any

from dockd.core import timefmt

FORMAT = "dockd.heartbeat/1"
MAX_BYTES = 256 << 10  # the whole signed object: MAX_CAMERAS cameras with every string at MAX_TEXT fit
MAX_CAMERAS = 256  # cameras listed per heartbeat (the most recently seen first); the rest are only counted
MAX_ALARMS = 32
MAX_TEXT = 200  # characters of any string a heartbeat carries (serials, bays, reasons, alarm messages)
FLEET_DIR = "_fleet"
_KEY = re.compile(r"^(?P<day>\d{4}-\d{2}-\d{2})/(?P<hms>\d{6})-(?P<seq>\d{16})\.json$")


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p)


def heartbeats_prefix(prefix: str) -> str:
    """``{prefix}/_fleet/heartbeats/``: the lifecycle rule's prefix."""
    return _join(prefix, FLEET_DIR, "heartbeats") + "/"


def station_dir(prefix: str, station: str) -> str:
    """``{prefix}/_fleet/heartbeats/station={S}/``: every heartbeat of one station."""
    return f"{heartbeats_prefix(prefix)}station={station}/"


def day_dir(prefix: str, station: str, day: str) -> str:
    """One station's heartbeats of one UTC day (``YYYY-MM-DD``)."""
    return f"{station_dir(prefix, station)}{day}/"


def stations_prefix(prefix: str) -> str:
    """``{prefix}/_fleet/stations/``: one small marker object per station that ever sent a heartbeat."""
    return _join(prefix, FLEET_DIR, "stations") + "/"


def marker_key(prefix: str, station: str) -> str:
    return stations_prefix(prefix) + station


def day_of(ns: int) -> str:
    y, m, d = timefmt.date_parts(ns)
    return f"{y}-{m}-{d}"


def key(prefix: str, station: str, at_ns: int, seq: int) -> str:
    """The key of the heartbeat signed at ``at_ns`` (station time, ns) with sequence number ``seq``."""
    t = timefmt.rfc3339_ns(at_ns)  # YYYY-MM-DDTHH:MM:SS.fffffffffZ
    return f"{day_dir(prefix, station, t[:10])}{t[11:13]}{t[14:16]}{t[17:19]}-{seq:016d}.json"


def parse_key(prefix: str, station: str, k: str) -> tuple[str, str, int] | None:
    """``(day, HHMMSS, seq)`` of a heartbeat key under ``station_dir``, None for anything else."""
    base = station_dir(prefix, station)
    if not k.startswith(base):
        return None
    m = _KEY.match(k[len(base):])
    if m is None:
        return None
    return m.group("day"), m.group("hms"), int(m.group("seq"))


def key_matches_body(prefix: str, station: str, k: str, body: dict[str, Any]) -> bool:
    """True if the key is exactly where a heartbeat with this body's station, ``at`` and ``seq`` belongs."""
    parsed = parse_key(prefix, station, k)
    at = body.get("at")
    if parsed is None or not isinstance(at, str) or len(at) < 19:
        return False
    day, hms, seq = parsed
    return (body.get("station") == station and body.get("seq") == seq and at[:10] == day
            and at[11:13] + at[14:16] + at[17:19] == hms)


def clip(text: object) -> str | None:
    """A string cut to MAX_TEXT characters (None stays None): a heartbeat never carries unbounded text."""
    if text is None:
        return None
    s = str(text)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT]


def problem(body: Any) -> str | None:
    """Why ``body`` is not a well-formed heartbeat (None if it is). Checks form and bounds only; the
    signature and the signer are checked against the trust log by the reader."""
    if not isinstance(body, dict):
        return "not a JSON object"
    why = _figures_problem(body)
    if why is not None:
        return why
    for name in ("clock", "audit", "storage"):
        if not isinstance(body.get(name), dict | None):
            return f"{name} is not a table"
    audit = body.get("audit") or {}
    if not all(_text(audit.get(k), optional=True) for k in ("last_head_at", "last_export_at")):
        return "audit times are not text"
    cams, alarms = body.get("cameras"), body.get("alarms")
    if not isinstance(cams, list) or len(cams) > MAX_CAMERAS:
        return f"cameras is not a list of at most {MAX_CAMERAS}"
    for c in cams:
        why = _camera_problem(c)
        if why is not None:
            return why
    if not isinstance(alarms, list) or len(alarms) > MAX_ALARMS:
        return f"alarms is not a list of at most {MAX_ALARMS}"
    if not all(isinstance(a, dict) and _text(a.get("kind")) and _text(a.get("message"), optional=True)
               for a in alarms):
        return "an alarm has no kind or a message that is not text"
    return None


def _figures_problem(body: dict[str, Any]) -> str | None:
    """The heartbeat's identity and its numbers."""
    if body.get("format") != FORMAT:
        return f"format is not {FORMAT}"
    if not isinstance(body.get("station"), str) or not body["station"]:
        return "no station"
    if type(body.get("seq")) is not int or body["seq"] < 1:
        return "no positive integer seq"
    if not isinstance(body.get("at"), str):
        return "no signing time (at)"
    for name in ("free_bytes", "upload_failures"):
        if type(body.get(name)) is not int or body[name] < 0:
            return f"{name} is not a non-negative integer"
    q = body.get("queue")
    if not isinstance(q, dict) or not all(type(v) is int and v >= 0 for v in q.values()):
        return "queue is not a table of counts"
    age = body.get("oldest_pending_age_s")
    if age is not None and (type(age) is not int or age < 0):
        return "oldest_pending_age_s is not a non-negative integer"
    return None


def _text(v: object, *, optional: bool = False) -> bool:
    """Text of at most MAX_TEXT characters (or None when ``optional``)."""
    return (v is None and optional) or (isinstance(v, str) and len(v) <= MAX_TEXT)


def _camera_problem(c: object) -> str | None:
    """Why one camera entry is not well formed (every member is shown or compared by the fleet view)."""
    if not isinstance(c, dict) or not _text(c.get("serial")) or not c["serial"]:
        return "a camera has no serial"
    if not all(_text(c.get(k), optional=True) for k in ("bay", "state", "last_dock")):
        return f"camera {c['serial']!r}: bay, state or last_dock is not text"
    if not isinstance(c.get("docked", False), bool):
        return f"camera {c['serial']!r}: docked is not true or false"
    an = c.get("anomalies", [])
    if not isinstance(an, list) or len(an) > MAX_ALARMS or not all(_text(x) for x in an):
        return f"camera {c['serial']!r}: anomalies is not a short list of text"
    off = c.get("clock_offset_s")
    if off is not None and (type(off) not in (int, float) or isinstance(off, bool)):
        return f"camera {c['serial']!r}: clock_offset_s is not a number"
    return None
