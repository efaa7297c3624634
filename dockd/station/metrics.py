"""Prometheus metrics served by ``dockd run`` at ``[metrics] listen`` (path ``/metrics``).

Gauges about clips, cameras and space are read from the queue at scrape
time (a custom collector), so they can never drift from the truth; counters
of bytes, errors and attempts are incremented by the daemon as work happens.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest, start_http_server

from dockd.core.lifecycle import CameraState
from dockd.queue.store import Queue

RECENT_S = 30 * 86400.0  # a camera not docked for this long leaves the per-camera metrics


class QueueCollector:
    def __init__(self, queue: Queue, data_dir: Path, clock=time.time, storage=lambda: None):
        self.queue, self.data_dir, self.clock, self.storage = queue, data_dir, clock, storage

    def collect(self):
        q = self.queue
        clips = GaugeMetricFamily("dockd_clips", "Clips in the queue by state", labels=["state"])
        byts = GaugeMetricFamily("dockd_clip_bytes", "Bytes of clips in the queue by state", labels=["state"])
        for state, (n, b) in q.counts_and_bytes().items():
            clips.add_metric([state], n)
            byts.add_metric([state], b)
        yield clips
        yield byts
        cams = GaugeMetricFamily("dockd_camera_state", "1 for the state each known camera is in, by bay",
                                 labels=["bay", "camera", "state"])
        for cam in q.cameras():
            for s in CameraState:
                cams.add_metric([cam.bay or "", cam.serial, str(s)], 1.0 if cam.state == s else 0.0)
        yield cams
        oldest = q.oldest_pending()
        yield GaugeMetricFamily("dockd_oldest_pending_clip_age_seconds",
                                "Age of the oldest clip not yet uploaded (0 if none)",
                                value=max(0.0, self.clock() - oldest) if oldest else 0.0)
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError:
            free = 0
        yield GaugeMetricFamily("dockd_free_bytes", "Free bytes on the data dir's filesystem", value=free)
        yield from self._continuity()
        active = q.alarms()
        yield GaugeMetricFamily("dockd_alarms", "Active alarms (clock, storage, conflict, object-lock, ...)",
                                value=len(active))
        # One series per active alarm kind, so a rule can page on object-lock and not on clock.
        alarm = GaugeMetricFamily("dockd_alarm", "1 for each active alarm, by kind", labels=["kind"])
        for a in active:
            alarm.add_metric([str(a["kind"])], 1.0)
        yield alarm
        exported = q.last_event("audit.exported")
        ts = GaugeMetricFamily("dockd_audit_last_export_timestamp_seconds",
                               "When the last daily audit segment was exported to storage (Unix time)")
        if exported is not None:  # no sample before the first export: no age to alert on yet
            ts.add_metric([], _epoch(exported["at"]))
        yield ts
        up = GaugeMetricFamily("dockd_storage_reachable",
                               "1 if the last storage probe succeeded, 0 if it failed (no sample before one)")
        reachable = self.storage()
        if reachable is not None:
            up.add_metric([], 1.0 if reachable else 0.0)
        yield up


    def _continuity(self):
        """Anomalies per kind (kept in the queue: a restart does not reset them) and each camera's last dock,
        for the cameras docked in the last RECENT_S only (the label set stays bounded by the fleet in use)."""
        q = self.queue
        anomalies = CounterMetricFamily("dockd_camera_anomalies", "Continuity anomalies reported at docks, by kind",
                                        labels=["kind"])
        for kind, n in sorted(q.anomaly_counts().items()):
            anomalies.add_metric([kind], n)
        yield anomalies
        last = GaugeMetricFamily("dockd_camera_last_dock_timestamp_seconds",
                                 "When each camera docked last (station clock), cameras seen recently",
                                 labels=["camera"])
        since = self.clock() - RECENT_S
        for serial, f in sorted(q.all_camera_facts().items()):
            if f.get("last_docked_at") is not None and f["last_docked_at"] >= since:
                last.add_metric([serial], f["last_docked_at"])
        yield last


def _epoch(at: object) -> float:
    """An audit row's time (RFC 3339 text, or epoch seconds) as epoch seconds."""
    if isinstance(at, int | float):
        return float(at)
    return datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp()


class Metrics:
    """The daemon's registry: counters it increments plus the queue collector."""

    def __init__(self, queue: Queue, data_dir: Path):
        self.registry = CollectorRegistry(auto_describe=True)
        self.offload_bytes = Counter("dockd_offload_bytes", "Bytes copied off cameras", registry=self.registry)
        self.upload_bytes = Counter("dockd_upload_bytes", "Bytes sent to central storage", registry=self.registry)
        self.upload_errors = Counter("dockd_upload_errors", "Failed upload attempts by error class",
                                     ["error_class"], registry=self.registry)
        self.upload_attempts = Counter("dockd_upload_attempts", "Upload attempts started", registry=self.registry)
        self.wiped = Counter("dockd_wiped_clips", "Clips deleted from cameras through the wipe gate",
                             registry=self.registry)
        for cls in ("transient", "permanent", "clock", "bad_digest", "conflict"):
            self.upload_errors.labels(cls)
        # The last storage probe's answer (set by the daemon); None (no sample) until a probe ran.
        self.storage_reachable: bool | None = None
        self.registry.register(QueueCollector(queue, data_dir, storage=lambda: self.storage_reachable))
        self._server: WSGIServer | None = None

    def serve(self, listen: str) -> None:
        host, port = listen.rsplit(":", 1)
        self._server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

