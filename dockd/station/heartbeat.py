"""The station's signed heartbeat: a small status object written to central storage every
``[fleet] heartbeat_interval_s`` (layout and bounds in :mod:`dockd.core.heartbeat`).

Contract:

* Never in the evidence path: the daemon calls :meth:`Heartbeats.maybe_send` from its tick and the write runs
  in its own thread; a failure is logged and the next interval tries again. Nothing here changes the queue.
  The first heartbeat goes one interval after the daemon started.
* Signed with the station key in the manifest scheme (JCS body minus ``signature``, Ed25519), carrying the
  station's time ``at`` and a ``seq`` that only grows: ``max(last + 1, now in ms)``, the last one kept in
  ``data_dir/heartbeat.seq`` (written before the object), so a lost seq file still gives a larger number
  unless the clock went back.
* Bounded: at most ``MAX_CAMERAS`` cameras (the most recently seen), every string cut to ``MAX_TEXT``.
* Each heartbeat is a new object (create-only put): nothing is overwritten, old ones expire by lifecycle.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rfc8785
import structlog

from dockd import __version__
from dockd.core import heartbeat as hb
from dockd.core.timefmt import rfc3339, rfc3339_ns
from dockd.evidence import keys, manifest
from dockd.evidence.durable import write_atomic
from dockd.queue.store import Queue
from dockd.storage.base import Backend

log = structlog.get_logger()
SEQ_FILE = "heartbeat.seq"


def next_seq(data_dir: Path, now: float) -> int:
    """The next sequence number, stored before it is used (so it is never used twice)."""
    p = Path(data_dir) / SEQ_FILE
    try:
        last = int(p.read_text().strip() or 0)
    except (OSError, ValueError):
        last = 0
    seq = max(last + 1, int(now * 1000))
    write_atomic(p, f"{seq}\n".encode(), mode=0o600)
    return seq


def _when(v: object) -> str | None:
    """A queue time (epoch seconds, or already RFC 3339 text) as RFC 3339 UTC."""
    if isinstance(v, int | float):
        return rfc3339(float(v))
    return hb.clip(v)


def _cameras(q: Queue) -> tuple[list[dict[str, Any]], int]:
    cams = sorted(q.cameras(), key=lambda c: c.docked_at or c.updated_at or 0.0, reverse=True)
    facts = q.all_camera_facts()
    out = []
    for c in cams[:hb.MAX_CAMERAS]:
        anomalies = [hb.clip(c.reason)] if c.state in ("error", "attention") and c.reason else []
        f = facts.get(c.serial) or {}
        if f.get("open_anomalies"):  # the continuity anomalies of its last dock, by kind (README "Continuity")
            last = next(iter(q.camera_docks(c.serial, limit=1)), {})
            kinds = sorted({str(a.get("kind")) for a in last.get("anomalies") or [] if isinstance(a, dict)})
            anomalies += [hb.clip(k) for k in kinds][:10]  # the kinds are few and short: the size bound holds
        offset = f.get("last_offset_s")
        out.append({"serial": hb.clip(c.serial), "bay": hb.clip(c.bay), "state": hb.clip(c.state),
                    "docked": bool(c.docked), "last_dock": rfc3339(c.docked_at), "anomalies": anomalies,
                    "clock_offset_s": float(offset) if isinstance(offset, int | float) else None})
    return out, max(0, len(cams) - hb.MAX_CAMERAS)


def build(q: Queue, *, station: str, now: float, seq: int, interval_s: float, free_bytes: int,
          upload_failures: int, storage: dict | None) -> dict[str, Any]:
    """The heartbeat body (unsigned) from the queue and the daemon's live figures."""
    oldest = q.oldest_pending()
    alarms = q.alarms()
    cams, more = _cameras(q)
    head = q.last_audit_head()
    export = q.last_event("audit.exported")
    return {
        "format": hb.FORMAT,
        "station": station,
        "seq": seq,
        "at": rfc3339_ns(int(now * 1e9)),
        "interval_s": int(interval_s),
        "software": f"dockd {__version__}",
        "clock": {"alarm": any(a["kind"] == "clock" for a in alarms)},
        "free_bytes": int(free_bytes),
        "queue": {str(k): int(v) for k, v in q.counts().items()},
        "oldest_pending_age_s": int(max(0.0, now - oldest)) if oldest else None,
        "upload_failures": int(upload_failures),
        "storage": {"reachable": storage.get("reachable")} if storage else None,
        "alarms": [{"kind": hb.clip(a["kind"]), "message": hb.clip(a["message"]), "at": _when(a.get("at"))}
                   for a in alarms[:hb.MAX_ALARMS]],
        "audit": {"last_head_at": _when(head.get("at")) if head else None,
                  "last_export_at": _when(export.get("at")) if export else None},
        "cameras": cams,
        "cameras_not_listed": more,
    }


def signed(body: dict[str, Any], key: keys.StationKey) -> bytes:
    """The stored bytes: the signed heartbeat as JCS (small, and what a verifier hashes anyway)."""
    data = rfc8785.dumps(manifest.sign(body, key))
    if len(data) > hb.MAX_BYTES:  # cannot happen with the bounds above; never write an unreadable heartbeat
        raise ValueError(f"heartbeat of {len(data)} bytes exceeds {hb.MAX_BYTES}")
    return data


class Heartbeats:
    """Sends a heartbeat every ``interval_s`` seconds, in a background thread, one at a time."""

    def __init__(self, *, queue: Queue, backend: Backend, key: keys.StationKey, station: str, prefix: str,
                 data_dir: Path, interval_s: float, figures: Callable[[], dict[str, Any]],
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.queue, self.backend, self.key, self.station, self.prefix = queue, backend, key, station, prefix
        self.data_dir, self.interval_s, self.figures = data_dir, interval_s, figures
        self.clock, self.monotonic = clock, monotonic
        # The first heartbeat goes one interval after start, not at once: the start itself is in the audit
        # log, a restart loop does not flood storage, and short runs (imports, drains) write none.
        self._last = monotonic()
        self._busy = threading.Lock()
        self._marked = False

    def maybe_send(self) -> threading.Thread | None:
        """Start a send in the background if one is due and none is running; return its thread."""
        now = self.monotonic()
        if self.interval_s <= 0 or now - self._last < self.interval_s:
            return None
        if not self._busy.acquire(blocking=False):
            return None
        self._last = now
        t = threading.Thread(target=self._send_guarded, name="heartbeat", daemon=True)
        t.start()
        return t

    def _send_guarded(self) -> None:
        try:
            self.send_now()
        except Exception as e:  # noqa: BLE001 - storage down or a bad figure: retried next interval
            log.warning("heartbeat not sent", error=str(e))
        finally:
            self._busy.release()

    def send_now(self) -> str:
        """Build, sign and store one heartbeat; return its key. Raises on any failure."""
        now = self.clock()
        seq = next_seq(self.data_dir, now)
        body = build(self.queue, station=self.station, now=now, seq=seq, interval_s=self.interval_s,
                     **self.figures())
        data = signed(body, self.key)
        k = hb.key(self.prefix, self.station, int(now * 1e9), seq)
        self.backend.put_bytes(k, data, hashlib.sha256(data).hexdigest())
        if not self._marked:  # same bytes every time: a re-put is idempotent
            marker = f"{self.station}\n".encode()
            self.backend.put_bytes(hb.marker_key(self.prefix, self.station), marker,
                                   hashlib.sha256(marker).hexdigest())
            self._marked = True
        return k
