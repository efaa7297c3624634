"""Helpers shared by tests (from tests/contract/test_uploader.py, which other tests imported as a library)."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from dockd import config as config_mod
from dockd.core.events import CameraInfo
from dockd.core.lifecycle import ClipState
from dockd.evidence import keys
from dockd.queue.store import Clip, Queue
from dockd.station.offloader import Offloader
from dockd.station.uploader import Uploader

T0 = 1_750_000_000.0  # injected "now"
CLIP_MTIME = 1_700_000_000  # 2023-11-14


class Clock:
    """An injected clock: tests move time, nothing sleeps."""

    def __init__(self, t: float = T0):
        self.t = t
        self.slept = 0.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s

    def sleep(self, s: float) -> None:
        self.slept += s
        self.t += s


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def write_config(path: Path, sections: dict[str, dict]) -> Path:
    lines = []
    for name, table in sections.items():
        if table is None:
            continue
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def make_config(tmp_path: Path, *, storage: dict | None, upload: dict | None = None, offload: dict | None = None,
                extra: dict | None = None, name: str = "dockd.toml") -> config_mod.Config:
    """Write a real TOML config and load it through the real validator."""
    sections = {
        "station": {"id": "st1", "data_dir": str(tmp_path / "data")},
        "storage": storage,
        "upload": {"backoff_initial_s": 1.0, "backoff_max_s": 60.0, "max_attempts": 4, **(upload or {})},
        "offload": {"reserve_free_mb": 0, **(offload or {})},
        "metrics": {"listen": ""},
        **(extra or {}),
    }
    return config_mod.load(write_config(tmp_path / name, sections))


def s3_storage(seaweed, bucket: str, **kw) -> dict:
    return {"url": f"s3://{bucket}/ev", "endpoint_url": seaweed.endpoint_url, "timeout_s": 10.0, **kw}


def make_camera(root: Path, sizes: list[int], *, seed: int = 1, serial: str = "CAM1") -> Path:
    """A camera volume: ``root/<serial>/DCIM/100MEDIA/CLIPnnnn.MP4`` with distinct random bytes."""
    cam = root / serial
    d = cam / "DCIM" / "100MEDIA"
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i, size in enumerate(sizes, 1):
        p = d / f"CLIP{i:04d}.MP4"
        p.write_bytes(rng.randbytes(size))
        os.utime(p, (CLIP_MTIME + i, CLIP_MTIME + i))
    return cam


def stage(cfg: config_mod.Config, queue: Queue, cam_dir: Path, clock: Clock | None = None) -> list[Clip]:
    """Offload the camera directory with the real Offloader; return the staged clips."""
    clock = clock or Clock()
    key, _ = keys.load_or_create(cfg.data_dir)
    serial = cam_dir.name
    queue.dock_camera(serial, source="watch", now=clock())
    Offloader(cfg, queue, key, clock=clock).offload(CameraInfo(serial=serial), cam_dir)
    staged = queue.clips(state=ClipState.STAGED, camera=serial)
    assert staged, "nothing was staged"
    return staged


def remote_sha256(client, bucket: str, key: str) -> str:
    return hashlib.sha256(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def drain(up: Uploader, queue: Queue, clock: Clock, *, max_steps: int = 200) -> None:
    """Run the uploader until nothing is staged or uploading; time jumps over backoffs."""
    for _ in range(max_steps):
        if up.run_once() is None:
            pending = queue.clips(state=[ClipState.STAGED, ClipState.UPLOADING])
            if not pending:
                return
            due = min(c.next_attempt_at or clock() for c in pending)
            clock.t = max(clock.t, due) + 0.001
    raise AssertionError(f"uploads did not settle: {queue.counts()}")
