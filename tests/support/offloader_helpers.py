"""Helpers shared by tests (from tests/unit/test_offloader.py, which other tests imported as a library)."""

from __future__ import annotations

from pathlib import Path

from dockd import config
from dockd.core.events import CameraInfo
from dockd.evidence import durable, keys
from dockd.queue.store import Queue
from dockd.station.offloader import Offloader
from tests.support.uploads import camera_dir

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SIDE_GLOBS = ["DCIM/**/*.XML", "DCIM/**/*.GPS"]


class Station:
    """A config + queue + key + offloader rooted in a temp dir."""

    def __init__(self, root: Path, *, data_dir: Path | None = None, on_progress=None, on_status=None, **offload):
        self.data_dir = data_dir or root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        o = {"clip_globs": ["DCIM/**/*.MP4"], "sidecar_globs": SIDE_GLOBS, "reserve_free_mb": 0, "buffer_kb": 64}
        o.update(offload)
        self.cfg = config.parse({"station": {"id": "st1", "data_dir": str(self.data_dir)}, "offload": o},
                                root / "dockd.toml")
        self.q = Queue(root / "queue.db")
        for serial in ("CAM1", "CAM2"):
            if self.q.camera(serial) is None:
                self.q.dock_camera(serial, source="import", now=T0)
        self.key, _ = keys.load_or_create(root / "keys")
        self.off = Offloader(self.cfg, self.q, self.key, clock=lambda: T0, on_progress=on_progress,
                             on_status=on_status)

    def offload(self, vol: Path, serial: str = "CAM1", cancel=None):
        return self.off.offload(CameraInfo(serial, vendor="Axon", source="import"), vol, cancel)

    def staging(self) -> list[str]:
        return sorted(p.name for p in self.off.staging.iterdir())


def make_volume(root: Path, files: dict[str, bytes], mtime_ns: int = 1_767_000_000_123_456_789) -> Path:
    """A camera volume at ``root`` holding ``files``, every mtime ``mtime_ns`` (through ``camera_dir``)."""
    return camera_dir(root, dict(files), mtime_ns=mtime_ns)


def wrong_hash_wrapper(monkeypatch, times: int) -> list:
    """Borg-style fault injection: the re-read hash comes back wrong ``times`` times."""
    real = durable.sha256_file
    calls: list = []

    def faulty(path, **kw):
        got, n = real(path, **kw)
        calls.append(got)
        if len(calls) <= times:
            return "0" * 64, n
        return got, n

    monkeypatch.setattr(durable, "sha256_file", faulty)
    return calls
