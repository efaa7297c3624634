"""Media facts from ffprobe's JSON: what a staged clip's container says about itself. Pure: no I/O.

:mod:`dockd.evidence.mediaprobe` runs ``ffprobe`` on the staged copy as hostile
input and hands the parsed (strict I-JSON) output here. :func:`facts` turns it
into the ``media`` member of the signed manifest::

    {"ok": true, "duration_s": float|null, "created_at": RFC 3339|null, "format": str,
     "codecs": [str, ...], "width": int|null, "height": int|null, "streams": int, "probe": "ffprobe X.Y"}

and :func:`failure` into ``{"ok": false, "reason": ..., "detail": ...}`` (``reason``
one of :data:`REASONS`). A file ffprobe cannot read is a fact about the file,
not an error of the station.

Everything in ffprobe's output came from the file (tags) or from a program
reading a hostile file: nothing is trusted. Strings get visible escapes for
non-printable characters (:func:`dockd.core.textsafe.printable`) and are cut to
:data:`MAX_TEXT` characters, lists to :data:`MAX_CODECS` entries; numbers that
are not finite, negative or absurd become null; ``created_at`` is the
container's ``creation_time`` tag normalised to the stored RFC 3339 form
(:func:`dockd.core.timefmt.normalise_time`), or null if it does not parse.
Display still goes through :mod:`dockd.core.textsafe` (a tag may hold any
printable-looking or control character).
"""

from __future__ import annotations

import math
from typing import Any

from dockd.core.errors import UsageError
from dockd.core.textsafe import printable
from dockd.core.timefmt import normalise_time

REASONS = ("unreadable", "timeout", "limit", "unavailable")
MAX_TEXT = 64  # a format or codec name is a few characters; a tag is not a place for essays
MAX_DETAIL = 200
MAX_CODECS = 16
MAX_DIMENSION = 1 << 16  # pixels; beyond any camera
MAX_DURATION_S = 10 * 365 * 86400.0  # a container claiming more than ten years is not a clip


# The container is chosen from the file's first bytes, here, and named to ffprobe with ``-f``: ffprobe's own
# probing runs every demuxer's detector over the hostile bytes (HLS, concat, image sequences among them) and
# costs ~0.1 s of CPU on a file that is none of them. Only containers a body-worn camera writes are named.
HEAD_BYTES = 396  # two MPEG-TS packets of the 192-byte (M2TS) kind, plus the first box/element header
_MOV_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")


def demuxer(head: bytes) -> str | None:
    """The ffprobe demuxer for a file starting with ``head`` (mov, matroska, avi, mpegts), or None."""
    if len(head) >= 8 and head[4:8] in _MOV_BOXES:
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if len(head) >= 189 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    if len(head) >= 197 and head[4] == 0x47 and head[196] == 0x47:
        return "mpegts"  # M2TS: 4-byte timestamp before each packet
    return None


def _text(v: Any, limit: int = MAX_TEXT) -> str | None:
    """A bounded string, or None if ``v`` is not a non-empty string."""
    if not isinstance(v, str) or not v:
        return None
    shown = printable(v[: limit * 2])  # visible escapes: the manifest's strings stay plain text (jq = JCS)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _number(v: Any) -> float | int | None:
    """ffprobe writes numbers as strings ("12.345000"); a finite non-negative float, else None."""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        return None
    if isinstance(v, str) and (len(v) > 32 or not v.strip()):
        return None
    try:
        f = float(v)
    except ValueError:
        return None
    if not math.isfinite(f) or f < 0 or f > MAX_DURATION_S:
        return None
    # Milliseconds, and an integral value as an integer: every JSON writer (Python, jq 1.6 and 1.7, RFC 8785)
    # then spells the number the same way, so the README's jq recipe reproduces the signed bytes.
    f = round(f, 3)
    return int(f) if f.is_integer() else f


def _dimension(v: Any) -> int | None:
    if type(v) is not int or not 0 < v <= MAX_DIMENSION:
        return None
    return v


def _created_at(fmt: dict[str, Any], streams: list[Any]) -> str | None:
    """The container's ``creation_time`` tag, else the first stream's; normalised, or None."""
    candidates = [fmt.get("tags")] + [s.get("tags") for s in streams if isinstance(s, dict)]
    for tags in candidates:
        if not isinstance(tags, dict):
            continue
        raw = _text(tags.get("creation_time"), MAX_TEXT)
        if raw is None:
            continue
        try:
            return normalise_time(raw)
        except (UsageError, OverflowError, ValueError):
            return None  # the tag is there and is not a time: say nothing rather than guess
    return None


def failure(reason: str, detail: str = "") -> dict[str, Any]:
    """The ``ok: false`` shape; ``detail`` is one short line (bounded, kept as text, shown via textsafe)."""
    if reason not in REASONS:
        raise ValueError(f"unknown media probe failure reason {reason!r}")
    out: dict[str, Any] = {"ok": False, "reason": reason}
    line = printable(" ".join(detail.split())[: MAX_DETAIL * 2])
    if line:
        out["detail"] = line if len(line) <= MAX_DETAIL else line[:MAX_DETAIL] + "..."
    return out


def facts(doc: Any) -> dict[str, Any]:
    """The ``media`` facts of ffprobe's ``-show_format -show_streams -show_program_version`` JSON.

    A document without a ``format`` object (ffprobe printed ``{}``) is ``unreadable``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("format"), dict):
        return failure("unreadable", "ffprobe found no container format")
    fmt: dict[str, Any] = doc["format"]
    raw_streams = doc.get("streams")
    streams: list[Any] = raw_streams if isinstance(raw_streams, list) else []
    codecs: list[str] = []
    width = height = None
    for s in streams:
        if not isinstance(s, dict):
            continue
        name = _text(s.get("codec_name")) or _text(s.get("codec_type")) or "unknown"
        if len(codecs) < MAX_CODECS:
            codecs.append(name)
        if width is None and s.get("codec_type") == "video":
            width, height = _dimension(s.get("width")), _dimension(s.get("height"))
            if width is None or height is None:
                width = height = None
    nb = fmt.get("nb_streams")
    n_streams = nb if type(nb) is int and 0 <= nb <= 1 << 20 else len(streams)
    pv = doc.get("program_version")
    version = _text(pv.get("version"), 40) if isinstance(pv, dict) else None
    return {
        "ok": True,
        "duration_s": _number(fmt.get("duration")),
        "created_at": _created_at(fmt, streams),
        "format": _text(fmt.get("format_name")) or "unknown",
        "codecs": codecs,
        "width": width,
        "height": height,
        "streams": n_streams,
        "probe": f"ffprobe {version}" if version else "ffprobe",
    }


def summary(media: Any) -> str:
    """One line for ``dockd show``: ``mov,mp4,... 12.0 s, h264+aac 1920x1080, created 2026-...`` or
    ``not readable (unreadable: ...)``. Not yet escaped: the caller shows it through textsafe."""
    if not isinstance(media, dict):
        return "not recorded"
    if media.get("ok") is not True:
        why = f"{media.get('reason')}" + (f": {media['detail']}" if media.get("detail") else "")
        return f"not probed ({why})" if media.get("reason") == "unavailable" else f"not readable ({why})"
    parts = [str(media.get("format"))]
    if media.get("duration_s") is not None:
        parts.append(f"{media['duration_s']} s")
    codecs = media.get("codecs")
    if isinstance(codecs, list) and codecs:
        parts.append("+".join(str(c) for c in codecs))
    if media.get("width") and media.get("height"):
        parts.append(f"{media['width']}x{media['height']}")
    parts.append(f"created {media.get('created_at') or 'unknown'}")
    return ", ".join(parts)
