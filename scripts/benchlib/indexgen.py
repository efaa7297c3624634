"""A signed clip index as the stations publish it (docs/clip-index.md), for the review's tests and bench.

Follows the format exactly: JSON lines written with ``json.dumps(obj, sort_keys=True, ensure_ascii=False)``,
heads signed with the station key (manifest scheme), ``prev`` = SHA-256 of the JCS form of the previous head.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

from dockd.agency.review.indexfmt import HEAD_TYPE, body_key, head_key
from dockd.evidence import manifest as mf
from dockd.evidence.keys import StationKey


def jsonl(objs: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(o, sort_keys=True, ensure_ascii=False) + "\n" for o in objs).encode("utf-8")


def clip_line(station: str, camera: str, started_at: str | None, duration_s: float | None, n: int,
              offset_s: float | None = 0.0, **extra: Any) -> dict[str, Any]:
    o: dict[str, Any] = {
        "type": "clip", "station": station, "camera": camera, "device_id": None, "profile": None,
        "path": f"DCIM/100MEDIA/FILE{n:04d}.MP4", "seq_no": n, "started_at": started_at,
        "started_at_source": "name" if started_at else None, "duration_s": duration_s, "ended_at": None,
        "camera_offset_s": offset_s, "station_clock": {"synchronised": True, "est_error_us": 100,
                                                       "max_error_us": 1000},
        "media": None, "sha256": hashlib.sha256(f"{station}/{camera}/{n}".encode()).hexdigest(), "size": 1 << 20,
        "mtime": started_at or "2026-01-01T00:00:00Z",
        "object_key": f"evidence/{station}/{camera}/{n:08d}.mp4", "manifest_key": f"evidence/{station}/{n}.json",
        "offloaded_at": started_at or "2026-01-01T00:00:00Z", "uploaded_at": started_at or "2026-01-01T00:00:00Z",
        "clip_id": n, "anomalies": [],
    }
    o.update(extra)
    return o


def dock_line(station: str, camera: str, docked_at: str, anomalies: list[dict[str, Any]] | None = None,
              **extra: Any) -> dict[str, Any]:
    o: dict[str, Any] = {
        "type": "dock", "station": station, "camera": camera, "device_id": None, "profile": None, "bay": "1",
        "docked_at": docked_at, "clips_on_card": 0, "clips_new": 0, "seq_min": None, "seq_max": None,
        "newest_clip_at": None, "camera_offset_s": 0.0, "days_since_last_dock": None,
        "anomalies": anomalies or [],
    }
    o.update(extra)
    return o


def segment(prefix: str, key: StationKey, station: str, seq: int, date: str, clips: list[dict[str, Any]],
            docks: list[dict[str, Any]], prev: dict[str, Any] | None, at: str, audit_from: int = 0,
            audit_to: int | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(signed head, {object key: bytes}) of segment ``seq``: the head and its two bodies."""
    objs: dict[str, bytes] = {}
    head: dict[str, Any] = {"type": HEAD_TYPE, "station": station, "seq": seq, "date": date,
                            "audit_from": audit_from, "audit_to": audit_to if audit_to is not None else audit_from + 1}
    for which, lines in (("clips", clips), ("docks", docks)):
        body = jsonl(lines)
        k = body_key(prefix, which, station, date, seq)
        objs[k] = body
        head[which] = {"key": k, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body), "lines": len(lines)}
    head["prev"] = hashlib.sha256(rfc8785.dumps(prev)).hexdigest() if prev is not None else None
    head["at"] = at
    head = mf.sign(head, key)
    objs[head_key(prefix, station, seq)] = (json.dumps(head, sort_keys=True, ensure_ascii=False) + "\n").encode()
    return head, objs
