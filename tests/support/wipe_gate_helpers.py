"""Helpers shared by tests (from tests/unit/test_wipe_gate.py, which other tests imported as a library)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockd.camera.volume import Volume
from dockd.core.lifecycle import ClipState
from dockd.queue.store import Queue
from dockd.station.uploader import Uploader
from dockd.station.wipe import wipe_clips
from dockd.storage import open_backend
from tests.support.uploads import Clock, drain, make_camera, make_config, stage


@pytest.fixture
def bench(tmp_path):
    """Returns ``setup(**offload)`` -> (cfg, queue, camera dir, uploaded clips, clock)."""
    opened: list[Queue] = []

    def setup(offload: dict | None = None, *, upload_now: bool = True, sidecars: bool = False, sizes=(20_000, 30_000)):
        share = tmp_path / "share"
        share.mkdir(exist_ok=True)
        off = {"sidecar_globs": ["DCIM/**/*.XML"]} if sidecars else {}
        cfg = make_config(tmp_path, storage={"url": f"file://{share}"}, offload={**off, **(offload or {})})
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        q = Queue(cfg.data_dir / "queue.db")
        opened.append(q)
        cam = make_camera(tmp_path / "cams", list(sizes))
        if sidecars:
            for i in range(1, len(sizes) + 1):
                x = cam / "DCIM" / "100MEDIA" / f"CLIP{i:04d}.XML"
                x.write_text(f"<meta clip='{i}'/>")
                os.utime(x, (1_700_000_000 + i, 1_700_000_000 + i))
        clock = Clock()
        clips = stage(cfg, q, cam, clock)
        if upload_now:
            drain(Uploader(cfg, q, open_backend(cfg.storage), owner="t", clock=clock), q, clock)
            clips = [q.clip(c.id) for c in clips]
            assert all(c.state is ClipState.UPLOADED for c in clips)
        return cfg, q, cam, clips, clock

    yield setup
    for q in opened:
        q.close()


def run_gate(cfg, q, cam, clock, clips=None, lock_ok=lambda: False, hook=None):
    with Volume(cam) as vol:
        return wipe_clips(cfg, q, vol, clips if clips is not None else q.clips(), lock_ok=lock_ok, clock=clock,
                          hook=hook)


def events(q: Queue, clip: int, name: str) -> list[dict]:
    return [r for r in q.audit_rows(clip=clip) if r["event"] == name]


def _same_size_other_content(p: Path) -> None:
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as recorded
