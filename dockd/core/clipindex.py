"""The clip index's shapes (docs/clip-index.md): object keys, clip and dock lines, bodies. Pure: no I/O.

The station (:mod:`dockd.station.clipindex`) builds lines with :func:`clip_line` and :func:`dock_line`
from what it recorded (the queue row, the signed manifest, audit details); the review reads them back
with :func:`parse_clip_line` / :func:`parse_dock_line` (strict I-JSON, the members the contract
promises, with their types). Every optional member of a manifest or an audit detail is read with care:
absent or of the wrong type, the line says ``null`` (never a guess).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dockd.core import ijson

HEAD_TYPE = "dockd.index-head/1"
MAX_LINE = 64 << 10  # one clip or dock line is well under 4 KiB; a bigger one is not ours


def _base(prefix: str, *parts: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), "_index", *parts) if p)


def clips_key(prefix: str, station: str, date: str, seq: int) -> str:
    """``{prefix}/_index/clips/station={S}/date={YYYY-MM-DD}/{seq:08d}.jsonl``"""
    return _base(prefix, "clips", f"station={station}", f"date={date}", f"{seq:08d}.jsonl")


def docks_key(prefix: str, station: str, date: str, seq: int) -> str:
    """``{prefix}/_index/docks/station={S}/date={YYYY-MM-DD}/{seq:08d}.jsonl``"""
    return _base(prefix, "docks", f"station={station}", f"date={date}", f"{seq:08d}.jsonl")


def heads_prefix(prefix: str, station: str) -> str:
    """The folder of one station's heads: ``{prefix}/_index/heads/station={S}/``."""
    return _base(prefix, "heads", f"station={station}") + "/"


def head_key(prefix: str, station: str, seq: int) -> str:
    """``{prefix}/_index/heads/station={S}/{seq:08d}.json``"""
    return heads_prefix(prefix, station) + f"{seq:08d}.json"


def head_seq_of_key(key: str) -> int | None:
    """The seq a head key names (``.../00000012.json`` -> 12), None for any other name."""
    name = key.rsplit("/", 1)[-1]
    stem = name[:-5] if name.endswith(".json") else ""
    return int(stem) if len(stem) == 8 and stem.isdigit() and int(stem) > 0 else None


def body(lines: list[dict[str, Any]]) -> bytes:
    """A body as stored: one ``json.dumps(line, sort_keys=True, ensure_ascii=False)`` + LF per line."""
    return "".join(json.dumps(x, sort_keys=True, ensure_ascii=False) + "\n" for x in lines).encode("utf-8")


# ------------------------------------------------------------------ reading optional members with care


def _get(obj: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _time(v: Any) -> str | None:
    """An RFC 3339 time as given, if it parses as one (with a zone); else None."""
    return v if isinstance(v, str) and _parse_time(v) is not None else None


def _parse_time(v: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def end_time(started_at: str | None, duration_s: float | None) -> str | None:
    """``started_at + duration_s`` in UTC (RFC 3339, microseconds), None unless both are known."""
    if started_at is None or duration_s is None or duration_s < 0:
        return None
    t = _parse_time(started_at)
    if t is None:
        return None
    try:
        end = t.astimezone(UTC) + timedelta(seconds=duration_s)
    except OverflowError:
        return None
    return end.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _media(m: Any) -> dict[str, Any] | None:
    if not isinstance(m, dict) or not isinstance(m.get("ok"), bool):
        return None
    codecs = m.get("codecs")
    return {"ok": m["ok"], "duration_s": _num(m.get("duration_s")), "created_at": _time(m.get("created_at")),
            "codecs": [c for c in codecs if isinstance(c, str)] if isinstance(codecs, list) else [],
            "width": _int(m.get("width")), "height": _int(m.get("height")), "streams": _int(m.get("streams"))}


def _station_clock(c: Any) -> dict[str, Any] | None:
    if not isinstance(c, dict) or not isinstance(c.get("synchronised"), bool):
        return None
    return {"synchronised": c["synchronised"], "est_error_us": _int(c.get("est_error_us")),
            "max_error_us": _int(c.get("max_error_us"))}


def _start(manifest: Any, media: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(started_at, source): from the name (profile pattern) first, then the container's creation time."""
    nf = _get(manifest, "name_facts")
    t = _time(_get(nf, "started_at"))
    if t is not None:
        src = _get(nf, "started_at_source")
        return t, src if src in ("name", "media", "mtime") else "name"
    if media is not None and media["ok"] and media["created_at"] is not None:
        return media["created_at"], "media"
    return None, None


def clip_line(*, station: str, clip_id: int, camera: str, path: str, sha256: str, size: int, mtime: str,
              object_key: str, manifest_key: str, uploaded_at: str, manifest: Any,
              anomalies: list[str]) -> dict[str, Any]:
    """One clip line. ``manifest`` is the clip's signed manifest as parsed (None if unreadable); the
    members other tasks add to it (``name_facts``, ``dock``, ``camera.device_id``, ``media``,
    ``station_clock``) are optional: absent, their line members are null."""
    media = _media(_get(manifest, "media"))
    duration = media["duration_s"] if media is not None and media["ok"] else None
    started, source = _start(manifest, media)
    profile = _str(_get(manifest, "name_facts", "profile")) or _str(_get(manifest, "camera", "profile"))
    return {
        "type": "clip", "station": station, "camera": camera,
        "device_id": _str(_get(manifest, "camera", "device_id")), "profile": profile,
        "path": path, "seq_no": _int(_get(manifest, "name_facts", "seq_no")),
        "started_at": started, "started_at_source": source, "duration_s": duration,
        "ended_at": end_time(started, duration),
        "camera_offset_s": _num(_get(manifest, "dock", "camera_offset_s")),
        "station_clock": _station_clock(_get(manifest, "station_clock")), "media": media,
        "sha256": sha256, "size": size, "mtime": mtime, "object_key": object_key, "manifest_key": manifest_key,
        "offloaded_at": _str(_get(manifest, "offloaded_at")), "uploaded_at": uploaded_at, "clip_id": clip_id,
        "anomalies": sorted(set(anomalies)),
    }


def dock_line(*, station: str, camera: str, at: str, detail: Any,
              anomalies: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One dock line from a ``camera.docked`` audit row (``at``, ``detail``). ``anomalies``: the
    ``camera.anomaly`` details of this dock when the docked detail does not carry them itself."""
    d = detail if isinstance(detail, dict) else {}
    own = d.get("anomalies")
    if isinstance(own, list):
        found = [a for a in own if isinstance(a, dict) and isinstance(a.get("kind"), str)]
    else:
        found = [a for a in anomalies or [] if isinstance(a.get("kind"), str)]
    return {
        "type": "dock", "station": station, "camera": camera, "device_id": _str(d.get("device_id")),
        "profile": _str(d.get("profile")), "bay": _str(d.get("bay")),
        "docked_at": _time(d.get("docked_at")) or at,
        "clips_on_card": _int(d.get("clips_on_card")), "clips_new": _int(d.get("clips_new")),
        "seq_min": _int(d.get("seq_min")), "seq_max": _int(d.get("seq_max")),
        "newest_clip_at": _time(d.get("newest_clip_at")), "camera_offset_s": _num(d.get("camera_offset_s")),
        "days_since_last_dock": _num(d.get("days_since_last_dock")),
        "anomalies": [{k: v for k, v in a.items() if k != "camera"} for a in found],
    }


def anomaly_paths(detail: Any) -> set[str]:
    """The clip paths an anomaly's facts name (``path``, ``paths``)."""
    out: set[str] = set()
    if isinstance(detail, dict):
        if isinstance(detail.get("path"), str):
            out.add(detail["path"])
        if isinstance(detail.get("paths"), list):
            out.update(p for p in detail["paths"] if isinstance(p, str))
    return out


# ------------------------------------------------------------------ strict reading (the review's side)

_N = type(None)
# The exact types each member may have (a JSON parser makes exact types: bool is not an int here).
_CLIP_TYPES: dict[str, frozenset[type]] = {k: frozenset(v) for k, v in {
    "station": (str,), "camera": (str,), "path": (str,), "sha256": (str,), "size": (int,), "mtime": (str,),
    "object_key": (str,), "manifest_key": (str,), "uploaded_at": (str,), "clip_id": (int,), "anomalies": (list,),
    "device_id": (str, _N), "profile": (str, _N), "seq_no": (int, _N),
    "started_at": (str, _N), "started_at_source": (str, _N),
    "duration_s": (int, float, _N), "ended_at": (str, _N),
    "camera_offset_s": (int, float, _N), "station_clock": (dict, _N),
    "media": (dict, _N), "offloaded_at": (str, _N),
}.items()}
_DOCK_TYPES: dict[str, frozenset[type]] = {k: frozenset(v) for k, v in {
    "station": (str,), "camera": (str,), "docked_at": (str,), "anomalies": (list,),
    "device_id": (str, _N), "profile": (str, _N), "bay": (str, _N),
    "clips_on_card": (int, _N), "clips_new": (int, _N), "seq_min": (int, _N),
    "seq_max": (int, _N), "newest_clip_at": (str, _N),
    "camera_offset_s": (int, float, _N), "days_since_last_dock": (int, float, _N),
}.items()}
_ABSENT = object()


def _parse(line: bytes | str, kind: str, types: dict[str, frozenset[type]]) -> dict[str, Any]:
    obj = ijson.loads(line, max_bytes=MAX_LINE)
    if type(obj) is not dict or obj.get("type") != kind:
        raise ijson.Invalid(f"not a {kind} line")
    for k, ts in types.items():
        v = obj.get(k, _ABSENT)
        if type(v) not in ts:
            if v is _ABSENT:
                raise ijson.Invalid(f"{kind} line lacks {k}")
            raise ijson.Invalid(f"{kind} line: {k} is {type(v).__name__}")
    return obj


def parse_clip_line(line: bytes | str) -> dict[str, Any]:
    """A clip line parsed as strict I-JSON with every member of the contract and its type; raises
    :class:`dockd.core.ijson.Invalid` (a ValueError naming the reason) otherwise. Unknown members are
    kept (a later producer may add some)."""
    return _parse(line, "clip", _CLIP_TYPES)


def parse_dock_line(line: bytes | str) -> dict[str, Any]:
    """A dock line, strictly (see :func:`parse_clip_line`)."""
    return _parse(line, "dock", _DOCK_TYPES)
