"""Building a station's history for clip index tests: docks and uploaded clips with signed manifests,
with or without the facts other parts of issue #14 add (name_facts, dock, device_id, media, station_clock)."""

from __future__ import annotations

import json

from sqlalchemy import insert

from dockd.core.lifecycle import ClipEvent as E
from dockd.core.timefmt import rfc3339
from dockd.evidence import manifest as mf
from dockd.evidence.keys import StationKey
from dockd.queue.schema import cameras
from dockd.queue.store import Queue

DAY = 86400.0
T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z


def dock(q: Queue, camera: str, at: float, *, facts: bool = False, bay: str = "b1") -> None:
    """A dock of ``camera`` (the queue's own ``camera.docked`` event); with ``facts`` also a dock
    detail as task A records it (dock line fields) and one anomaly event."""
    if not facts:
        q.dock_camera(camera, source="watch", bay=bay, profile="generic", now=at)
        return
    if q.camera(camera) is None:  # the camera row without the queue's own docked event
        with q.tx() as c:
            c.execute(insert(cameras).values(serial=camera, state="docked", docked=1, docked_at=at, updated_at=at))
    detail = {"source": "watch", "bay": bay, "profile": "generic", "device_id": f"dev-{camera}",
              "docked_at": rfc3339(at), "clips_on_card": 3, "clips_new": 2, "seq_min": 1, "seq_max": 4,
              "newest_clip_at": rfc3339(at - 60), "camera_offset_s": 2.5, "days_since_last_dock": 1.25}
    q.record("camera.docked", camera=camera, detail=detail, now=at)
    q.record("camera.anomaly", camera=camera, now=at,
             detail={"kind": "seq_gap", "camera": camera, "from": 2, "to": 4, "missing": 1})


def uploaded_clip(q: Queue, key: StationKey, camera: str, path: str, at: float, *, n: int = 1,
                  facts: bool = False, station: str = "st-01", prefix: str = "ev") -> int:
    """A clip through discovered .. uploaded at ``at``, its manifest signed (with the optional facts)."""
    if q.camera(camera) is None:
        q.dock_camera(camera, source="watch", now=at - 5)
    c, _ = q.discover(camera, path, 1000 + n, 1_767_000_000_000_000_000 + n, now=at - 4)
    sha = f"{n:064x}"
    okey = f"{prefix}/{station}/{camera}/2026/01/05/{sha}.mp4"
    cam = {"serial": camera, "profile": "generic", **({"device_id": f"dev-{camera}"} if facts else {})}
    body = mf.build(sha256=sha, size=1000 + n, path=path, mtime="2026-01-05T00:00:00.000000001Z", camera=cam,
                    station_id=station, offloaded_at=rfc3339(at - 3), verify="reread", sidecars=[],
                    dockd_version="test")
    if facts:
        body["name_facts"] = {"profile": "generic", "seq_no": n, "started_at": "2026-01-04T23:00:00Z",
                              "started_at_source": "name", "parsed": True}
        body["dock"] = {"docked_at": rfc3339(at - 5), "camera_offset_s": 2.5, "bay": "b1"}
        body["media"] = {"ok": True, "duration_s": 12.5, "created_at": "2026-01-04T23:00:01Z", "format": "mov",
                         "codecs": ["h264", "aac"], "width": 1280, "height": 720, "streams": 2, "probe": "ffprobe 6"}
        body["station_clock"] = {"synchronised": True, "est_error_us": 120, "max_error_us": 4000, "status": 0,
                                 "source": "adjtimex"}
        q.record("camera.anomaly", camera=camera, clip=c.id, now=at - 4,
                 detail={"kind": "clock_ahead", "camera": camera, "path": path, "ahead_s": 30})
    q.transition(c.id, E.COPY_STARTED, now=at - 3)
    q.transition(c.id, E.STAGED, now=at - 2, sha256=sha, object_key=okey, manifest=json.dumps(mf.sign(body, key)))
    q.transition(c.id, E.UPLOAD_STARTED, now=at - 1)
    q.transition(c.id, E.UPLOADED, now=at, detail={"object_key": okey, "sha256": sha})
    return c.id
