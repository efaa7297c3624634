"""The dock's facts: what the card's names say, the camera's device id, continuity across docks.

Called by the offloader once per scan, before any clip is copied. It reads what the station knew
about the camera (its ``camera_facts`` row, the clips seen at earlier docks and not yet copied),
lets :func:`dockd.core.continuity.assess` decide, and records the dock once
(:meth:`dockd.queue.store.Queue.record_dock`: the ``camera.docked`` event with the dock's facts and
one ``camera.anomaly`` event per anomaly). Cost: one row for the camera, one identity search per
file on the card, the camera's clips still waiting to be copied; never its history.

Nothing here blocks the evidence path: the offloader catches any failure, records
``camera.facts_failed`` and copies on (:func:`assess_dock` is all-or-nothing for the dock record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from dockd.camera.volume import Scan, Volume
from dockd.config import Config
from dockd.core.clipnames import NameFacts, NameRule, parse_name
from dockd.core.continuity import Known, Limits, OnCard, Pending, assess
from dockd.core.errors import UsageError
from dockd.core.events import CameraInfo
from dockd.core.lifecycle import ClipState
from dockd.core.timefmt import rfc3339
from dockd.queue.store import Queue

log = structlog.get_logger("dockd.dock")

DEVICE_ID_FILE_MAX = 4096  # a device id file holds a line; anything bigger is not one
DEVICE_ID_MAX_CHARS = 128
# A hostile card (100,000 unparsable names) must not make one dock a megabyte of audit: past this many,
# anomalies are counted in the dock's "anomalies_omitted", not recorded one by one.
MAX_ANOMALIES_PER_DOCK = 1000


@dataclass
class DockFacts:
    """What the offloader puts into each clip's manifest from this dock."""

    profile: str | None = None
    device_id: str | None = None
    rule: NameRule | None = None
    dock: dict[str, Any] | None = None  # manifest["dock"]: {"docked_at", "camera_offset_s", "bay"}
    names: dict[str, NameFacts] = field(default_factory=dict)

    def name_facts(self, path: str) -> dict[str, Any]:
        """manifest["name_facts"] of the clip at ``path``."""
        f = self.names.get(path) or parse_name(path, self.rule)
        return f.to_json()


def names_only(cfg: Config, cam: CameraInfo) -> DockFacts:
    """The profile and its name rule without touching the queue or the volume (the fall-back)."""
    prof = cfg.profile_named(cam.profile)
    rule = prof.names.rule(prof.name) if prof is not None and prof.names is not None else None
    return DockFacts(profile=prof.name if prof else cam.profile, rule=rule)


def read_device_id(cfg: Config, cam: CameraInfo, vol: Volume) -> str | None:
    """The camera's device id as its profile says (``udev_serial``, ``label``, ``file:RELPATH``), or None.

    The file is read through the volume (no link followed, regular files only, at most 4 KiB); its
    first line, stripped, is the id if it is 1..128 printable characters. Anything else: None."""
    prof = cfg.profile_named(cam.profile)
    how = prof.device_id if prof else ""
    if how == "udev_serial":
        return cam.serial
    if how == "label":
        return cam.label
    if not how.startswith("file:"):
        return None
    try:
        raw = vol.read_small(how.removeprefix("file:"), DEVICE_ID_FILE_MAX)
    except (OSError, UsageError, ValueError) as e:
        log.warning("device id file not readable", camera=cam.serial, error=str(e))
        return None
    if raw is None:
        return None
    try:
        line = raw.decode("utf-8").splitlines()[0].strip() if raw.strip() else ""
    except UnicodeDecodeError:
        return None
    return line if 0 < len(line) <= DEVICE_ID_MAX_CHARS and line.isprintable() else None


def assess_dock(cfg: Config, queue: Queue, cam: CameraInfo, vol: Volume, scan: Scan,
                now: float | None = None) -> DockFacts:
    """The facts of this dock, recorded once per dock (audited at ``now``, the station's clock); the manifest
    fields for its clips.

    Without a dock (the camera has no ``docked_at``: a test or an import of a directory) only the
    names are read. A second pass of the same dock reuses the recorded facts."""
    out = names_only(cfg, cam)
    out.names = {e.path: parse_name(e.path, out.rule) for e in scan.clips}
    out.device_id = read_device_id(cfg, cam, vol)
    row = queue.camera(cam.serial)
    if row is None or row.docked_at is None:
        return out
    docked_at = row.docked_at
    if queue.dock_recorded(cam.serial, docked_at):
        last = next(iter(queue.camera_docks(cam.serial, limit=1)), {})
        out.dock = {"docked_at": rfc3339(docked_at), "camera_offset_s": last.get("camera_offset_s"), "bay": cam.bay}
        return out
    k = queue.camera_facts(cam.serial) or {}
    known = Known(k.get("last_docked_at"), k.get("last_seq"), k.get("newest_started_at"), k.get("device_id"))
    seen = queue.seen_before(cam.serial, [(e.path, e.size, e.mtime_ns) for e in scan.clips], docked_at)
    card = []
    for e in scan.clips:
        f = out.names[e.path]
        card.append(OnCard(e.path, f.seq_no, f.started_at, new=(e.path, e.size, e.mtime_ns) not in seen,
                           unparsed=out.rule is not None and not f.parsed))
    pending = [Pending(c.path, parse_name(c.path, out.rule).seq_no, c.created_at)
               for c in queue.clips(camera=cam.serial, state=ClipState.DISCOVERED) if c.created_at < docked_at]
    claimed = queue.device_id_claimed_by(out.device_id) if out.device_id else []
    a = assess(known, card, docked_at, serial=cam.serial, pending=pending, complete=scan.complete,
               device_id=out.device_id, device_id_claimed_by=claimed,
               limits=Limits(cfg.continuity.clock_ahead_s, cfg.continuity.long_absence_days))
    shown = a.anomalies[:MAX_ANOMALIES_PER_DOCK]
    detail: dict[str, Any] = {"station": cfg.station.id, "camera": cam.serial, "device_id": out.device_id,
                              "profile": out.profile, "bay": cam.bay, "source": cam.source, "vendor": cam.vendor,
                              "model": cam.model, **a.facts, "anomalies": shown, "inventory": True}
    if len(a.anomalies) > len(shown):
        detail["anomalies_omitted"] = len(a.anomalies) - len(shown)
    facts = {"device_id": a.known.device_id, "profile": out.profile, "last_docked_at": docked_at,
             "last_seq": a.known.last_seq, "newest_started_at": a.known.newest_started_at}
    if a.facts["camera_offset_s"] is not None:  # a dock with no new dated clip keeps the last estimate
        facts.update(last_offset_s=a.facts["camera_offset_s"], last_offset_at=docked_at)
    if queue.record_dock(cam.serial, docked_at, detail, facts=facts, anomalies=shown, now=now):
        for x in shown:
            log.warning("camera anomaly", camera=cam.serial, **{k: v for k, v in x.items() if k != "camera"})
    out.dock = {"docked_at": rfc3339(docked_at), "camera_offset_s": a.facts["camera_offset_s"], "bay": cam.bay}
    return out


def record_bare_dock(cfg: Config, queue: Queue, cam: CameraInfo, now: float | None = None) -> bool:
    """Record the camera's current dock without an inventory (the worker failed or stopped before it
    read the card: mount failed, undocked at once, the facts could not be computed), once; True if
    recorded now. Its inventory fields are null: nothing is claimed about the card."""
    row = queue.camera(cam.serial)
    if row is None or row.docked_at is None or queue.dock_recorded(cam.serial, row.docked_at):
        return False
    detail: dict[str, Any] = {
              "station": cfg.station.id, "camera": cam.serial, "device_id": None, "profile": cam.profile,
              "bay": cam.bay, "source": cam.source, "vendor": cam.vendor, "model": cam.model,
              "docked_at": rfc3339(row.docked_at), "clips_on_card": None, "clips_new": None, "seq_min": None,
              "seq_max": None, "newest_clip_at": None, "camera_offset_s": None, "days_since_last_dock": None,
              "anomalies": [], "inventory": False}
    return queue.record_dock(cam.serial, row.docked_at, detail, facts={"last_docked_at": row.docked_at}, now=now)

