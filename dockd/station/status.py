"""Live figures the daemon shares with `dockd status` (a small JSON file, rewritten every second).

The queue holds the truth about clips and cameras; this file only adds what
is not worth a database write: byte counters and rates, and the daemon's pid.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

STATUS_FILE = "status.json"


class Meters:
    """Thread-safe byte counters per camera, with a rate over the last few seconds."""

    def __init__(self, window_s: float = 5.0):
        self._lock = threading.Lock()
        self.window = window_s
        self.off: dict[str, int] = defaultdict(int)
        self.up: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.wiped_total = 0
        self._samples: list[tuple[float, str, str, int]] = []
        self.attempts = 0
        self.sink = None  # optional dockd.station.metrics.Metrics mirrored by every call

    def _add(self, kind: str, serial: str, n: int) -> None:
        with self._lock:
            (self.off if kind == "offload" else self.up)[serial] += n
            now = time.monotonic()
            self._samples.append((now, kind, serial, n))
            while self._samples and now - self._samples[0][0] > self.window:
                self._samples.pop(0)

    def offloaded(self, serial: str, n: int) -> None:
        self._add("offload", serial, n)
        if self.sink:
            self.sink.offload_bytes.inc(n)

    def uploaded(self, serial: str, n: int) -> None:
        self._add("upload", serial, n)
        if self.sink:
            self.sink.upload_bytes.inc(n)

    def upload_error(self, cls: str) -> None:
        with self._lock:
            self.errors[cls] += 1
        if self.sink:
            self.sink.upload_errors.labels(cls).inc()

    def attempt(self) -> None:
        with self._lock:
            self.attempts += 1
        if self.sink:
            self.sink.upload_attempts.inc()

    def wiped(self, n: int) -> None:
        with self._lock:
            self.wiped_total += n
        if self.sink and n:
            self.sink.wiped.inc(n)

    def reset_camera(self, serial: str) -> None:
        """A new dock: byte counters for this camera start again (they measure the current dock)."""
        with self._lock:
            self.off.pop(serial, None)
            self.up.pop(serial, None)

    def snapshot(self) -> dict:
        with self._lock:
            now = time.monotonic()
            rate: dict[str, dict[str, float]] = defaultdict(lambda: {"offload": 0.0, "upload": 0.0})
            for t, kind, serial, n in self._samples:
                if now - t <= self.window:
                    rate[serial][kind] += n / self.window
            return {"offload_bytes": dict(self.off), "upload_bytes": dict(self.up), "rate": dict(rate),
                    "upload_errors": dict(self.errors), "wiped": self.wiped_total,
                    "upload_attempts": self.attempts}


def write_status(data_dir: Path, obj: dict) -> None:
    """Replace the status file atomically (not fsynced: it is rebuilt every second and never evidence)."""
    p = Path(data_dir) / STATUS_FILE
    tmp = p.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, sort_keys=True))
    os.replace(tmp, p)


def read_status(data_dir: Path) -> dict | None:
    try:
        return json.loads((Path(data_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
