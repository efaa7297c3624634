"""The daemon in-process (huey-style): injected clock, sources and mounter, a watch-dir-like camera directory,
``file://`` storage; ``run()`` with ``drain`` returns once the docked camera's worker is done.

No subprocess, no server, no mount: a fake source puts Docked/Undocked events on the daemon's queue, a fake
mounter records what the daemon asked of it. The assertions are on camera and clip states in the queue and on
the camera directory.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dockd.core.events import CameraInfo, Docked, Undocked
from dockd.core.lifecycle import CameraState, ClipState
from dockd.queue.store import Queue
from dockd.station.daemon import Daemon, queue_path
from tests.support.uploads import Clock, make_camera, make_config

SERIAL = "CAM1"


class FakeSource:
    """A dock source: on start, puts its events on the daemon's queue (set by ``attach``)."""

    def __init__(self, *events: object):
        self.pending = list(events)
        self.events = None
        self.started = self.stopped = 0

    def attach(self, d: Daemon) -> FakeSource:
        self.events = d.events
        return self

    def start(self) -> None:
        self.started += 1
        for ev in self.pending:
            self.events.put(ev)

    def stop(self) -> None:
        self.stopped += 1


class FakeMounter:
    """Watch-dir docks need no mounts: records the calls; a mount request is a test failure."""

    def __init__(self):
        self.calls: list[str] = []

    def cleanup_stale(self) -> list[str]:
        self.calls.append("cleanup_stale")
        return []

    def mount(self, *a, **kw):
        raise AssertionError("a watch-dir dock must not be mounted")

    def unmount(self, m, *, lazy: bool = False) -> None:
        self.calls.append("unmount")

    def remount_rw(self, m) -> None:
        self.calls.append("remount_rw")

    def remount_ro(self, m) -> None:
        self.calls.append("remount_ro")


@pytest.fixture
def station(tmp_path):
    """Returns ``run(storage=..., offload=..., sizes=..., events=...)`` -> (exit code, queue, camera dir, mounter)."""
    opened: list[Queue] = []

    def run(*, storage: dict | str | None = "file", offload: dict | None = None, sizes=(20_000, 30_000),
            extra_events=()):
        share = tmp_path / "share"
        share.mkdir(exist_ok=True)
        if storage == "file":
            storage = {"url": f"file://{share}"}
        elif storage == "locked":  # Object Lock wanted; a share cannot enforce it
            storage = {"url": f"file://{share}", "object_lock_days": 1}
        cfg = make_config(tmp_path, storage=storage, offload=offload)
        cam = make_camera(tmp_path / "watch", list(sizes), serial=SERIAL)
        docked = Docked(CameraInfo(serial=SERIAL, source="watch", bay="dir:watch"), root=cam)
        src = FakeSource(docked, *extra_events)
        mounter = FakeMounter()
        d = Daemon(cfg, drain=True, clock=Clock(), sources=[src], mounter=mounter)
        src.attach(d)
        result: list[int] = []
        t = threading.Thread(target=lambda: result.append(d.run()), daemon=True)
        t.start()
        t.join(timeout=120)
        if t.is_alive():
            d.stop()
            t.join(timeout=30)
            raise AssertionError("the daemon did not drain")
        assert src.started == 1 and src.stopped == 1
        q = Queue(queue_path(cfg))
        opened.append(q)
        return result[0], q, cam, mounter

    yield run
    for q in opened:
        q.close()


def clips_on(cam: Path) -> list[str]:
    return sorted(p.name for p in cam.rglob("*.MP4"))


def test_ready_after_every_clip_is_uploaded_and_wiped(station):
    code, q, cam, mounter = station()
    assert code == 0
    c = q.camera(SERIAL)
    assert c.state == CameraState.READY and c.docked
    assert {x.state for x in q.clips(camera=SERIAL)} == {ClipState.WIPED}
    assert len(q.clips(camera=SERIAL)) == 2
    assert clips_on(cam) == []
    assert "cleanup_stale" in mounter.calls and "remount_rw" not in mounter.calls  # no mount: nothing remounted


def test_refused_wipe_needs_attention_and_keeps_the_clips(station):
    # Object Lock wanted but a share cannot enforce it: the wipe gate refuses every clip.
    code, q, cam, _ = station(storage="locked")
    assert code == 1
    c = q.camera(SERIAL)
    assert c.state == CameraState.ATTENTION
    assert "were not wiped and stay on the camera" in c.reason
    assert {x.state for x in q.clips(camera=SERIAL)} == {ClipState.UPLOADED}
    assert clips_on(cam) == ["CLIP0001.MP4", "CLIP0002.MP4"]


def test_wipe_never_holds_the_clips(station):
    code, q, cam, _ = station(offload={"wipe": "never"})
    assert code == 0
    c = q.camera(SERIAL)
    assert c.state == CameraState.HOLDING
    assert "wiping is off" in c.reason
    assert {x.state for x in q.clips(camera=SERIAL)} == {ClipState.UPLOADED}
    assert clips_on(cam) == ["CLIP0001.MP4", "CLIP0002.MP4"]


def test_without_storage_staged_is_final(station):
    code, q, cam, _ = station(storage=None)
    assert code == 0
    c = q.camera(SERIAL)
    assert c.state == CameraState.HOLDING
    assert {x.state for x in q.clips(camera=SERIAL)} == {ClipState.STAGED}
    assert clips_on(cam) == ["CLIP0001.MP4", "CLIP0002.MP4"]


def test_undock_cancels_the_worker_and_nothing_is_wiped(station):
    code, q, cam, _ = station(extra_events=(Undocked(SERIAL),))
    c = q.camera(SERIAL)
    assert c.state == CameraState.UNDOCKED and not c.docked
    assert not q.clips(camera=SERIAL, state=[ClipState.WIPING, ClipState.WIPED])
    assert clips_on(cam) == ["CLIP0001.MP4", "CLIP0002.MP4"]


def test_the_daemon_exports_the_clip_index_of_a_finished_day(station, tmp_path):
    """The day's docks and uploads go to the clip index at the daemon's first housekeeping after midnight."""
    from dockd.evidence import keys
    from dockd.evidence.clipindex import verify_chain
    from dockd.station import clipindex
    from dockd.storage import open_backend
    from dockd.storage.indexstore import read_station
    from tests.support.uploads import T0

    code, q, _cam, _m = station()
    assert code == 0 and clipindex.segments(q) == []  # the current day: rows wait up to [index] interval_s
    cfg = make_config(tmp_path, storage={"url": f"file://{tmp_path / 'share'}"}, offload=None)
    d = Daemon(cfg, drain=True, clock=Clock(T0 + 86400), sources=[], mounter=FakeMounter())
    assert d.run() == 0
    (seg,) = verify_chain("st1", read_station(open_backend(cfg.storage), cfg.storage.prefix, "st1"),
                          keys.load(cfg.data_dir).public)
    assert sorted(x["path"] for x in seg.clip_lines()) == sorted(c.path for c in q.clips())
    assert [x["camera"] for x in seg.dock_lines()] == [SERIAL]
