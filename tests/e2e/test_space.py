"""The station-wide free-space reserve: several cameras offloading at once onto one small real disk.

A loop-mounted ext4 image made for each test (root only) holds the staging
area. Cameras are offloaded by the one shared Offloader (as the daemon's camera
workers do) from threads. A sampler thread watches the disk's free space the
whole time.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dockd.core.lifecycle import ClipState
from dockd.station.space import SpaceLedger
from tests.support import scratch
from tests.support.offloader_helpers import Station, make_volume, wrong_hash_wrapper

MiB = 1 << 20


@contextmanager
def ext4(tmp_path: Path, size_mb: int) -> Iterator[Path]:
    """A fresh ext4 of ``size_mb`` MiB (no root-reserved blocks: free means free) mounted for the test."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a loop device")
    img, mnt = tmp_path / "disk.img", tmp_path / "disk"
    with open(img, "wb") as f:
        f.truncate(size_mb * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(img)], check=True)
    mnt.mkdir()
    if subprocess.run(["mount", "-o", "loop", str(img), str(mnt)]).returncode != 0:
        pytest.skip("cannot loop-mount an ext4 image here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def fill(path: Path, leave: int = 0) -> None:
    """Allocate a file taking all free space on its disk but ``leave`` bytes (about: to 4 KiB)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        off, chunk = 0, 16 * MiB
        while chunk >= 4096:
            want = min(chunk, shutil.disk_usage(path.parent).free - leave)
            if want < 4096:
                break
            try:
                os.posix_fallocate(fd, off, want)
                off += want
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    finally:
        os.close(fd)


class FreeSampler:
    """Samples the disk's free bytes in a thread until stopped; keeps the lowest seen."""

    def __init__(self, path: Path):
        self.path, self.low = path, shutil.disk_usage(path).free
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.001):
            self.low = min(self.low, shutil.disk_usage(self.path).free)

    def close(self) -> int:
        self.stop.set()
        self.thread.join()
        return min(self.low, shutil.disk_usage(self.path).free)


def run_cameras(st: Station, vols: dict[str, Path]) -> tuple[dict, list[threading.Thread]]:
    out: dict = {}

    def one(serial: str, vol: Path) -> None:
        try:
            out[serial] = st.offload(vol, serial)
        except BaseException as e:  # noqa: BLE001 - the test reports it
            out[serial] = e

    threads = [threading.Thread(target=one, args=(s, v), daemon=True) for s, v in vols.items()]
    for t in threads:
        t.start()
    return out, threads


def test_three_cameras_share_one_reserve(tmp_path):
    """Room for two clips beside the 8 MiB reserve, three cameras of two 6 MiB clips each: copies wait
    (``offloading``, with the reason) instead of overrunning the reserve; once a filler file is deleted
    by another thread every clip is staged, none failed."""
    with ext4(tmp_path, 72) as disk:
        paused = threading.Event()
        statuses: list[tuple[str, str | None]] = []

        def on_status(serial: str, reason: str | None) -> None:
            statuses.append((serial, reason))
            if reason:
                paused.set()

        st = Station(tmp_path, data_dir=disk / "data", on_status=on_status, reserve_free_mb=8)
        st.off.space_poll_s = 0.05
        for serial in ("CAM3",):
            st.q.dock_camera(serial, source="import")
        vols = {s: make_volume(tmp_path / s, {"DCIM/A.MP4": os.urandom(6 * MiB), "DCIM/B.MP4": os.urandom(6 * MiB)})
                for s in ("CAM1", "CAM2", "CAM3")}
        filler = disk / "filler"
        fill(filler, leave=8 * MiB + 16 * MiB)
        sampler = FreeSampler(disk)
        try:
            out, threads = run_cameras(st, vols)
            assert paused.wait(60), "no camera paused although the clips cannot all fit"
            filler.unlink()  # space returns (as when uploads prune staged copies)
            for t in threads:
                t.join(120)
                assert not t.is_alive(), "an offload is still waiting after space was freed"
            low = sampler.close()
            for serial, s in out.items():
                assert not isinstance(s, BaseException), s
                assert (s.staged, s.aborted, s.quarantined, s.errors) == (2, 0, 0, []), (serial, s)
            clips = st.q.clips()
            assert len(clips) == 6 and {c.state for c in clips} == {ClipState.STAGED}
            assert all(c.last_error is None for c in clips)
            assert low >= 8 * MiB, f"free space fell to {low / MiB:.1f} MiB, below the 8 MiB reserve"
            assert st.off.space.reserved == 0  # every promise given back
            reasons = [r for _, r in statuses if r]
            assert reasons and all("staging disk full" in r and "reserve 8 MiB" in r for r in reasons)
            for serial in {s for s, r in statuses if r}:  # every camera that paused was told it goes on
                assert [r for s, r in statuses if s == serial][-1] is None
            assert [r for r in st.q.audit_rows() if r["event"] == "offload.paused"]
        finally:
            sampler.close()
            st.q.close()


def test_enospc_mid_copy_is_a_pause_not_a_failed_copy(tmp_path, monkeypatch):
    """The disk fills up under a copy (someone else wrote to it): the copy pauses with the reason and
    starts over when space returns, and that copy does not count against the clip's two copies (a
    re-read mismatch afterwards still gets its second copy instead of a quarantine)."""
    with ext4(tmp_path, 48) as disk:
        filler = disk / "filler"
        statuses: list[str | None] = []
        filled = threading.Event()

        def on_progress(serial: str, n: int) -> None:
            if not filled.is_set():
                filled.set()
                fill(filler)  # the first bytes are written; now the disk is full

        def on_status(serial: str, reason: str | None) -> None:
            statuses.append(reason)
            if reason:
                filler.unlink()  # space returns while the camera waits

        data = os.urandom(8 * MiB)
        vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": data})
        st = Station(tmp_path, data_dir=disk / "data", on_progress=on_progress, on_status=on_status,
                     reserve_free_mb=1, buffer_kb=256)
        st.off.space_poll_s = 0.05
        calls = wrong_hash_wrapper(monkeypatch, times=1)
        try:
            s = scratch.run_bounded(lambda: st.offload(vol), 120, "offload hung after ENOSPC")
            assert (s.staged, s.aborted, s.quarantined, s.errors) == (1, 0, 0, [])
            c = st.q.clips()[0]
            assert c.state is ClipState.STAGED and Path(c.staged_path).read_bytes() == data
            assert len(calls) == 2  # the mismatch was answered with the second copy
            assert len(statuses) == 2 and "No space left on device" in statuses[0] and statuses[1] is None
            paused = [r for r in st.q.audit_rows() if r["event"] == "offload.paused"]
            assert len(paused) == 1 and "copying again when space returns" in paused[0]["detail"]["reason"]
            events = [r["event"] for r in st.q.audit_rows(clip=c.id)]
            assert "clip.copy_aborted" not in events
            assert not [n for n in st.staging() if n.endswith(".tmp")]
            assert st.off.space.reserved == 0
        finally:
            st.q.close()


# ------------------------------------------------------------------ the ledger itself (a fake disk)


def test_ledger_promises_each_byte_once():
    disk = {"free": 100}
    led = SpaceLedger(Path("/nonexistent"), 10, disk=lambda p: (disk["free"], 1000))
    assert led.take(50) == (True, 100)
    assert led.take(41) == (False, 100)  # 100 - 50 promised - 10 reserve = 40 left
    assert led.take(40) == (True, 100)
    assert led.reserved == 90
    disk["free"] = 10  # both copies are written
    assert not led.whole()
    led.release(50)
    assert led.reserved == 40 and not led.whole()
    disk["free"] = 60
    assert led.whole()
    with pytest.raises(ValueError):
        led.release(41)


def test_ledger_release_wakes_a_waiting_copy():
    led = SpaceLedger(Path("/nonexistent"), 0, disk=lambda p: (100, 1000))
    assert led.take(80)[0]
    got = []

    def waiter() -> None:
        while not got:
            ok, _ = led.take(50, wait=600)
            if ok:
                got.append(True)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    led.release(80)
    t.join(60)
    assert not t.is_alive(), "a release did not wake the waiting copy (it would sleep its 600 s)"
    assert got == [True] and led.reserved == 50
