"""The review's own inputs: the roster and the dispatch (CAD/RMS) export, both CSV.

Both are hostile input: regular files only (no symlink, FIFO or device), bounded in size, fields bounded in
length, and any bad row is one :class:`UsageError` (exit 2) naming the file, the line and the field. Names
read here are never rendered as markup (the HTML report escapes them; the terminal shows them with
:mod:`dockd.core.textsafe`).

Roster columns (fixed): ``camera`` (serial or device id), ``officer``, ``from``, ``to`` (empty: open-ended),
optional ``unit``. CAD columns: named by the ``[review] cad_*`` keys of the config (every export differs):
incident, call type, dispatched, arrived (may be empty), cleared, officer, optional unit; one row per
(incident, officer). Times: RFC 3339 with ``Z`` or an offset, or a local time without zone read in
``[review] cad_timezone``.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dockd.agency.review.match import Assignment, Incident
from dockd.core.errors import UsageError
from dockd.core.textsafe import printable
from dockd.evidence.localfile import read_regular

MAX_FILE = 512 << 20  # a year of a large agency's CAD export is tens of MiB
MAX_FIELD = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class CadColumns:
    incident: str = "incident"
    call_type: str = "call_type"
    dispatched: str = "dispatched"
    arrived: str = "arrived"
    cleared: str = "cleared"
    officer: str = "officer"
    unit: str = ""  # "" = no unit column


@dataclass(frozen=True)
class Loaded:
    """What an input file held, with its SHA-256 (named in the signed report) and what was noticed."""

    path: str
    sha256: str
    notes: list[str]


def _read(path: Path, what: str) -> tuple[bytes, str]:
    raw = read_regular(path, MAX_FILE)
    if raw is None:
        raise UsageError(f"{what} {printable(path)}: larger than {MAX_FILE} bytes")
    return raw, hashlib.sha256(raw).hexdigest()


def _rows(path: Path, raw: bytes, what: str, need: list[str]):
    """(line number, row dict) of a CSV with a header naming at least ``need``."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} {printable(path)}: not UTF-8 (byte {e.start})") from None
    if "\x00" in text:
        raise UsageError(f"{what} {printable(path)}: holds a NUL byte (not a CSV text file)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise UsageError(f"{what} {printable(path)}: empty (no header line)")
        header = [h.strip() for h in header]
        missing = [n for n in need if n not in header]
        if missing:
            raise UsageError(f"{what} {printable(path)}: line 1: no column {printable(missing[0])!s} "
                             f"(header: {printable(','.join(header))[:200]})")
        for row in reader:
            line = reader.line_num
            if not row or row == [""]:
                continue
            if len(row) != len(header):
                raise UsageError(f"{what} {printable(path)}: line {line}: {len(row)} fields, header has "
                                 f"{len(header)}")
            if max(map(len, row)) <= MAX_FIELD:
                yield line, dict(zip(header, row, strict=True))
                continue
            for h, v in zip(header, row, strict=True):
                if len(v) > MAX_FIELD:
                    raise UsageError(f"{what} {printable(path)}: line {line}: field {printable(h)}: longer than "
                                     f"{MAX_FIELD} characters")
    except csv.Error as e:
        raise UsageError(f"{what} {printable(path)}: line {reader.line_num}: not valid CSV ({e})") from None


def parse_time(text: str, tz: ZoneInfo) -> int:
    """ns since the epoch of RFC 3339 (``Z``/offset) or a zone-less local time in ``tz``; ValueError."""
    t = text.strip()
    dt = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return (dt - _EPOCH) // _US * 1000  # exact integer arithmetic, no float


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"[review] cad_timezone: unknown time zone {printable(name)}") from None


def _time(path: Path, what: str, line: int, field: str, text: str, tz: ZoneInfo) -> int:
    try:
        return parse_time(text, tz)
    except (ValueError, OverflowError):
        raise UsageError(f"{what} {printable(path)}: line {line}: field {printable(field)}: not a time: "
                         f"{printable(text)[:60]!s}") from None


def _name(path: Path, what: str, line: int, field: str, text: str) -> str:
    v = text.strip()
    if not v:
        raise UsageError(f"{what} {printable(path)}: line {line}: field {printable(field)}: empty")
    _printable(path, what, line, field, v)
    return v


def _printable(path: Path, what: str, line: int, field: str, v: str) -> str:
    """Names end up in a signed report, a terminal and a web page: control, format and odd space characters
    are refused rather than carried (a report must read the same to every tool)."""
    if not v.isprintable():
        raise UsageError(f"{what} {printable(path)}: line {line}: field {printable(field)}: holds a control or "
                         f"non-printing character: {printable(v)[:60]}")
    return v


def load_roster(path: Path, tz: ZoneInfo) -> tuple[list[Assignment], dict[str, str], Loaded]:
    """The roster's assignments, officer -> unit (when the roster has a ``unit`` column), and what was noticed:
    an open-ended assignment followed by another of the same camera is closed where the next begins; a camera
    assigned to two officers at once is kept for both and reported."""
    what = "roster"
    raw, digest = _read(path, what)
    entries: list[tuple[int, Assignment]] = []
    units: dict[str, str] = {}
    for line, r in _rows(path, raw, what, ["camera", "officer", "from", "to"]):
        cam = _name(path, what, line, "camera", r["camera"])
        officer = _name(path, what, line, "officer", r["officer"])
        f = _time(path, what, line, "from", r["from"], tz)
        t = _time(path, what, line, "to", r["to"], tz) if r["to"].strip() else None
        if t is not None and t <= f:
            raise UsageError(f"{what} {printable(path)}: line {line}: field to: not after from")
        if r.get("unit", "").strip():
            units[officer] = _printable(path, what, line, "unit", r["unit"].strip())
        entries.append((line, Assignment(cam, officer, f, t)))
    notes: list[str] = []
    per_cam: dict[str, list[tuple[int, Assignment]]] = defaultdict(list)
    for line, a in entries:
        per_cam[a.camera].append((line, a))
    out: list[Assignment] = []
    for cam, lst in per_cam.items():
        lst.sort(key=lambda e: e[1].from_ns)
        fixed: list[tuple[int, Assignment]] = []
        for i, (line, a) in enumerate(lst):
            if a.to_ns is None and i + 1 < len(lst):
                nxt_line, nxt = lst[i + 1]
                a = Assignment(a.camera, a.officer, a.from_ns, nxt.from_ns)
                notes.append(f"roster line {line}: open-ended assignment of camera {printable(cam)} closed where "
                             f"line {nxt_line} begins")
            fixed.append((line, a))
        for i, (line, a) in enumerate(fixed):
            for line2, b in fixed[i + 1:]:
                if b.from_ns >= (a.to_ns if a.to_ns is not None else b.from_ns + 1):
                    break
                if b.officer != a.officer:
                    notes.append(f"roster lines {line} and {line2}: camera {printable(cam)} assigned to "
                                 f"{printable(a.officer)} and {printable(b.officer)} at once (kept for both)")
        out.extend(a for _, a in fixed)
    return out, units, Loaded(str(path), digest, notes)


def load_cad(path: Path, cols: CadColumns, tz: ZoneInfo) -> tuple[list[Incident], Loaded]:
    """One :class:`Incident` per (incident, officer) row of the dispatch export."""
    what = "CAD export"
    need = [cols.incident, cols.call_type, cols.dispatched, cols.cleared, cols.officer]
    if cols.arrived:
        need.append(cols.arrived)
    if cols.unit:
        need.append(cols.unit)
    raw, digest = _read(path, what)
    out: list[Incident] = []
    seen: dict[tuple[str, str], int] = {}
    notes: list[str] = []
    for line, r in _rows(path, raw, what, need):
        inc = _name(path, what, line, cols.incident, r[cols.incident])
        officer = _name(path, what, line, cols.officer, r[cols.officer])
        d = _time(path, what, line, cols.dispatched, r[cols.dispatched], tz)
        c = _time(path, what, line, cols.cleared, r[cols.cleared], tz)
        a = None
        if cols.arrived and r[cols.arrived].strip():
            a = _time(path, what, line, cols.arrived, r[cols.arrived], tz)
            if not d <= a <= c:
                raise UsageError(f"{what} {printable(path)}: line {line}: field {printable(cols.arrived)}: not "
                                 "between dispatch and clear")
        if c < d:
            raise UsageError(f"{what} {printable(path)}: line {line}: field {printable(cols.cleared)}: before "
                             "dispatch")
        if (inc, officer) in seen:
            notes.append(f"CAD line {line}: incident {printable(inc)} officer {printable(officer)} repeats line "
                         f"{seen[(inc, officer)]} (both kept)")
        seen.setdefault((inc, officer), line)
        call_type = _printable(path, what, line, cols.call_type, r[cols.call_type].strip())
        unit = _printable(path, what, line, cols.unit, r[cols.unit].strip()) if cols.unit else ""
        out.append(Incident(inc, officer, call_type, d, a, c, unit, line))
    return out, Loaded(str(path), digest, notes)
