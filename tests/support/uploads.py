"""Helpers shared by tests: THE dockd.toml writer (``write_config``/``station_config``/``make_config``),
THE camera builder (``camera_dir``; ``make_camera`` for numbered random clips), an injected clock, and the
upload helpers (staging, draining, remote hashes)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Mapping
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


def toml_value(v) -> str:
    """``v`` (bool, int, float, str, list, dict) as a TOML value; a dict is an inline table."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def write_config(path: Path, sections: dict[str, dict | list[dict] | None]) -> Path:
    """Write ``sections`` as TOML at ``path``: table name -> its keys (a list of dicts: an array of tables,
    ``[[camera]]``; None leaves the table out)."""
    lines = []
    for name, table in sections.items():
        for t in table if isinstance(table, list) else [table]:
            if t is None:
                continue
            lines.append(f"[[{name}]]" if isinstance(table, list) else f"[{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in t.items()]
            lines.append("")
    path.write_text("\n".join(lines))
    return path


def station_config(path: Path, *, data_dir: Path, station_id: str = "st1", **sections: dict | None) -> Path:
    """A valid dockd.toml at ``path`` for station ``station_id`` keeping its data in ``data_dir``; each
    keyword is a further table (``offload={...}``, ``storage={...}``, ``metrics={"listen": ""}``; None: left
    out). Returns ``path``."""
    return write_config(path, {"station": {"id": station_id, "data_dir": str(data_dir)}, **sections})


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


def camera_dir(root: Path, files: dict[str, bytes | int], *, mtime_ns: int | dict[str, int] | None = None,
               seed: int = 1) -> Path:
    """THE camera builder: the directory ``root`` (a camera volume or a card) holding ``files`` (path
    relative to ``root`` -> its bytes, or a size for that many seeded random bytes); each file's mtime is
    ``mtime_ns`` (one value, or per path; None: left as written). Returns ``root``."""
    rng = random.Random(seed)
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(content) if isinstance(content, int) else content)
        t = mtime_ns.get(rel) if isinstance(mtime_ns, dict) else mtime_ns
        if t is not None:
            os.utime(p, ns=(t, t))
    return root


def make_camera(root: Path, sizes: list[int], *, seed: int = 1, serial: str = "CAM1") -> Path:
    """A camera volume: ``root/<serial>/DCIM/100MEDIA/CLIPnnnn.MP4`` with distinct random bytes, mtimes
    CLIP_MTIME + n."""
    names = [f"DCIM/100MEDIA/CLIP{i:04d}.MP4" for i in range(1, len(sizes) + 1)]
    (root / serial / "DCIM" / "100MEDIA").mkdir(parents=True, exist_ok=True)
    return camera_dir(root / serial, dict(zip(names, sizes, strict=True)), seed=seed,
                      mtime_ns={n: (CLIP_MTIME + i) * 10**9 for i, n in enumerate(names, 1)})


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
