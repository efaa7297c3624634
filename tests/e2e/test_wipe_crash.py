"""A wipe is an intent and a confirmation, and survives a crash between any two of its steps.

The steps (dockd.station.wipe.STEPS): intent committed (``wipe_started``, clip
``wiping``) / sidecar unlinked / clip unlinked / camera directory fsynced /
confirmation committed (``wiped`` with its receipt). Each test crashes a
wipe at one point, either with an exception from the wipe's hook (the
process survives, nothing after the point runs) or with a real SIGKILL of a
child process held at the point, then throws the Queue and Volume away and
docks the camera again in a real Daemon (in-process, watched-directory
camera, ``file://`` storage), which is what a restarted station does. The end
state is checked: file gone from the camera, ``wiped`` with one receipt, the
camera never ``ready`` before that receipt.

Clips are staged and uploaded by the real Offloader and Uploader (see
tests/unit/test_wipe_gate.py). One SIGKILL test runs on a real exFAT image on a
loop device (exfat-fuse), re-mounted between the crash and the re-dock.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dockd.core.events import CameraInfo, Docked
from dockd.core.lifecycle import CameraState, ClipState, camera_state
from dockd.queue.store import Queue
from dockd.station.daemon import Daemon
from dockd.station.uploader import Uploader
from dockd.station.wipe import STEPS
from dockd.storage import open_backend
from tests.support import exfat
from tests.support.scratch import run_bounded
from tests.support.uploads import CLIP_MTIME, Clock, drain, make_config, stage
from tests.support.wipe_gate_helpers import _same_size_other_content, events, run_gate

REPO = Path(__file__).resolve().parents[2]
SERIAL = "CAM1"


class Crash(Exception):
    """Raised by the wipe's hook: the process 'dies' at that point (nothing after it runs)."""


def crash_at(point: str, clip_id: int):
    def hook(p: str, cid: int) -> None:
        if p == point and cid == clip_id:
            raise Crash(point)
    return hook


def cam_state(q: Queue) -> CameraState:
    """What the lifecycle says of the camera from its clips (as the daemon decides it)."""
    return camera_state(q.camera_counts(SERIAL), offloading_done=True, storage_configured=True,
                        wipe_mode="after-upload")


def redock(cfg, cam: Path) -> int:
    """A restarted station: a real Daemon (fresh Queue) that finds the camera docked, drains, stops."""
    d = Daemon(cfg, drain=True, sources=[])
    d.events.put(Docked(CameraInfo(serial=SERIAL), root=cam))
    return run_bounded(d.run, 120, "the daemon did not drain after the re-dock")


def audit(cfg) -> list[dict]:
    q = Queue(cfg.data_dir / "queue.db")
    try:
        return q.audit_rows()
    finally:
        q.close()


def assert_wiped_once_and_ready_after(cfg, cam: Path, clip_ids: list[int]) -> dict[int, dict]:
    """Every clip wiped with exactly one receipt per wipe, its files gone; the camera went `ready`
    only after the last receipt. Returns each clip's last receipt."""
    q = Queue(cfg.data_dir / "queue.db")
    try:
        rows = q.audit_rows()
        receipts = {}
        for cid in clip_ids:
            c = q.clip(cid)
            assert c.state is ClipState.WIPED, (cid, c.state, c.last_error)
            assert not (cam / c.path).exists()
            for sc in q.sidecars(cid):
                assert sc["wiped_at"] is not None and not (cam / sc["path"]).exists()
            wiped = [r for r in rows if r["clip"] == cid and r["event"] == "clip.wiped"]
            starts = [r for r in rows if r["clip"] == cid and r["event"] in ("clip.wipe_started", "clip.wipe_redo")]
            assert len(wiped) == len(starts) >= 1  # one confirmation per intent, never two
            receipts[cid] = wiped[-1]
        last_receipt = max(r["seq"] for r in receipts.values())
        ready = [r["seq"] for r in rows if r["event"] == "camera.state" and r["camera"] == SERIAL
                 and r["detail"]["to"] == "ready"]
        assert ready and min(ready) > last_receipt, "camera ready before every wipe was confirmed"
        assert q.camera(SERIAL).state == "ready"
        assert q.verify_audit()[1] is None
        return {cid: r["detail"]["receipt"] for cid, r in receipts.items()}
    finally:
        q.close()


# ------------------------------------------------------------------ a crash between each pair of steps


@pytest.mark.parametrize("point", STEPS)
def test_crash_at_each_step_is_settled_by_the_next_dock(bench, point):
    cfg, q, cam, clips, clock = bench(sidecars=True)
    victim, other = clips
    side = cam / q.sidecars(victim.id)[0]["path"]
    with pytest.raises(Crash):
        run_gate(cfg, q, cam, clock, hook=crash_at(point, victim.id))
    after = q.clip(victim.id)
    # the intent is on record before anything is deleted; the receipt only once all is done
    assert after.state is (ClipState.WIPED if point == "confirmed" else ClipState.WIPING)
    assert (cam / victim.path).exists() is (point in ("intent", "sidecar_unlinked"))
    assert side.exists() is (point == "intent")
    assert cam_state(q) is not CameraState.READY  # the other clip is uploaded, the victim maybe wiping
    if point != "confirmed":
        assert cam_state(q) is CameraState.WIPING and events(q, victim.id, "clip.wiped") == []
    q.close()

    assert redock(cfg, cam) == 0
    receipts = assert_wiped_once_and_ready_after(cfg, cam, [victim.id, other.id])
    r = receipts[victim.id]
    assert r["sha256"] == victim.sha256 and r["path"] == victim.path and r["object_key"] == victim.object_key
    if point == "confirmed":
        assert r["confirmed"] == "after deletion" and "resumed" not in r
    else:
        assert r["resumed"] == "an interrupted wipe"
        # still there: gated again (hash) and deleted; already unlinked: found gone, nothing re-checked
        assert r["confirmed"] == ("deleted on re-check" if point in ("intent", "sidecar_unlinked")
                                  else "found gone on re-check")
        assert ("checked" in r) is (point in ("intent", "sidecar_unlinked"))
        [rec] = [e for e in audit(cfg) if e["event"] == "recovery.wipes"]
        assert rec["detail"]["wiping"] == [victim.id]
    assert receipts[other.id]["confirmed"] == "after deletion"


# ------------------------------------------------------------------ the bug of old: `wiped` but still there


def _restore(p: Path, data: bytes, mtime_ns: int) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.utime(p, ns=(mtime_ns, mtime_ns))


def test_clip_recorded_wiped_but_still_on_the_camera_is_wiped_again_at_the_next_dock(bench):
    """What a lost unlink (or a crash in the old wipe between its commit and its unlink) leaves: the queue
    says `wiped` with a receipt, the file is on the camera. The next dock deletes it, audited as such."""
    cfg, q, cam, clips, clock = bench()
    victim, other = clips
    data = (cam / victim.path).read_bytes()
    assert sorted(run_gate(cfg, q, cam, clock).wiped) == sorted(c.id for c in clips)
    _restore(cam / victim.path, data, victim.mtime_ns)  # the same path, size, mtime (and bytes)
    q.close()

    assert redock(cfg, cam) == 0
    receipts = assert_wiped_once_and_ready_after(cfg, cam, [victim.id, other.id])
    assert receipts[victim.id]["resumed"] == "still on the camera after its recorded wipe"
    assert receipts[victim.id]["confirmed"] == "deleted on re-check" and receipts[victim.id]["checked"] == "sha256"
    rows = audit(cfg)
    [redo] = [r for r in rows if r["event"] == "clip.wipe_redo"]
    assert redo["clip"] == victim.id and redo["detail"]["from"] == "wiped" and redo["detail"]["to"] == "wiping"
    assert not [r for r in rows if r["event"] == "clip.wipe_redo" and r["clip"] == other.id]


def test_clip_recorded_wiped_but_back_with_other_bytes_is_kept_and_needs_attention(bench):
    cfg, q, cam, clips, clock = bench()
    victim = clips[0]
    data = bytearray((cam / victim.path).read_bytes())
    run_gate(cfg, q, cam, clock)
    data[10] ^= 0xFF
    _restore(cam / victim.path, bytes(data), victim.mtime_ns)  # same path, size, mtime; other content
    q.close()

    assert redock(cfg, cam) == 1  # the camera needs a person
    q = Queue(cfg.data_dir / "queue.db")
    try:
        c = q.clip(victim.id)
        assert c.state is ClipState.UPLOADED and "hashes to" in c.last_error  # the truth: uploaded, on camera
        assert (cam / victim.path).read_bytes() == bytes(data)
        assert q.camera(SERIAL).state == "attention"
        assert [r["event"] for r in q.audit_rows(clip=victim.id)][-2:] == ["clip.wipe_redo", "clip.wipe_aborted"]
    finally:
        q.close()


# ------------------------------------------------------------------ the way back, and re-checks


def test_unlink_that_fails_goes_back_to_uploaded(bench):
    """The clip changes on the camera between the gate and its unlink: the unlink refuses, the clip is
    `uploaded` again (never `wiped`), its already deleted sidecar is recorded wiped."""
    cfg, q, cam, clips, clock = bench(sidecars=True)
    victim = clips[0]
    side = q.sidecars(victim.id)[0]

    def touch_clip(p: str, cid: int) -> None:
        if p == "sidecar_unlinked" and cid == victim.id:
            os.utime(cam / victim.path, (CLIP_MTIME + 99, CLIP_MTIME + 99))

    res = run_gate(cfg, q, cam, clock, hook=touch_clip)
    assert victim.id not in res.wiped and [cid for cid, _ in res.refused] == [victim.id]
    c = q.clip(victim.id)
    assert c.state is ClipState.UPLOADED and c.last_error.startswith("wipe refused: deletion failed")
    assert (cam / victim.path).exists() and not (cam / side["path"]).exists()
    assert q.sidecars(victim.id)[0]["wiped_at"] is not None
    assert [r["event"] for r in q.audit_rows(clip=victim.id)][-2:] == ["clip.wipe_started", "clip.wipe_aborted"]
    assert events(q, victim.id, "clip.wiped") == []


def test_interrupted_wipe_whose_file_changed_is_refused_on_the_re_check(bench):
    cfg, q, cam, clips, clock = bench()
    victim = clips[0]
    with pytest.raises(Crash):
        run_gate(cfg, q, cam, clock, hook=crash_at("intent", victim.id))
    _same_size_other_content(cam / victim.path)  # only the hash of the re-check can tell
    q.close()

    assert redock(cfg, cam) == 1
    q = Queue(cfg.data_dir / "queue.db")
    try:
        c = q.clip(victim.id)
        assert c.state is ClipState.UPLOADED and "hashes to" in c.last_error
        assert (cam / victim.path).exists()
        assert q.camera(SERIAL).state == "attention"
        assert [r["event"] for r in q.audit_rows(clip=victim.id) if r["event"].startswith("clip.")][-2:] == [
            "clip.wipe_started", "clip.wipe_aborted"]
    finally:
        q.close()


def test_interrupted_wipe_with_wiping_now_off_goes_back_to_uploaded(bench, tmp_path):
    cfg, q, cam, clips, clock = bench()
    victim = clips[0]
    with pytest.raises(Crash):
        run_gate(cfg, q, cam, clock, hook=crash_at("intent", victim.id))
    never = make_config(tmp_path, storage={"url": cfg.storage.url}, offload={"wipe": "never"}, name="never.toml")
    res = run_gate(never, q, cam, clock, clips=[q.clip(victim.id)])
    assert res.returned == [victim.id] and res.wiped == [] and res.refused == []
    assert q.clip(victim.id).state is ClipState.UPLOADED and (cam / victim.path).exists()


def test_interrupted_wipe_is_not_found_gone_through_a_swapped_directory(bench, tmp_path):
    """Hostile camera: the clip's directory is moved away and replaced by a symlink after the intent.
    Absence is not proven (links are never followed), so the clip goes back to uploaded, not wiped."""
    cfg, q, cam, clips, clock = bench()
    victim = clips[0]
    with pytest.raises(Crash):
        run_gate(cfg, q, cam, clock, hook=crash_at("intent", victim.id))
    media = (cam / victim.path).parent
    media.rename(tmp_path / "moved")
    media.symlink_to(tmp_path / "moved")
    res = run_gate(cfg, q, cam, clock, clips=[q.clip(victim.id)])
    assert res.wiped == [] and [cid for cid, _ in res.refused] == [victim.id]
    c = q.clip(victim.id)
    assert c.state is ClipState.UPLOADED and c.last_error.startswith("wipe refused: cannot check source")
    assert (tmp_path / "moved" / Path(victim.path).name).exists() and events(q, victim.id, "clip.wiped") == []


def test_interrupted_wipe_re_check_includes_object_lock(bench, tmp_path):
    cfg, q, cam, clips, clock = bench()
    victim = clips[0]
    with pytest.raises(Crash):
        run_gate(cfg, q, cam, clock, hook=crash_at("intent", victim.id))
    locked = make_config(tmp_path, storage={"url": cfg.storage.url, "object_lock_days": 1}, name="lock.toml")
    res = run_gate(locked, q, cam, clock, clips=[q.clip(victim.id)], lock_ok=lambda: False)
    assert res.wiped == [] and [cid for cid, _ in res.refused] == [victim.id]
    assert q.clip(victim.id).state is ClipState.UPLOADED and (cam / victim.path).exists()
    assert "Object Lock" in q.clip(victim.id).last_error and [a["kind"] for a in q.alarms()] == ["object-lock"]


def _fsync_failing_on_dirs(monkeypatch, err: int) -> None:
    """os.fsync that fails with ``err`` for directories (what some filesystems answer); files unchanged."""
    real = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(err, os.strerror(err))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("err", [errno.EINVAL, errno.ENOTSUP])
def test_a_filesystem_that_cannot_fsync_a_directory_is_tolerated_and_said_so(bench, monkeypatch, err):
    cfg, q, cam, clips, clock = bench()
    _fsync_failing_on_dirs(monkeypatch, err)
    res = run_gate(cfg, q, cam, clock)
    assert sorted(res.wiped) == sorted(c.id for c in clips)
    for c in clips:
        [ev] = events(q, c.id, "clip.wiped")
        assert ev["detail"]["receipt"]["dir_synced"] is False  # the receipt says no more than happened


def test_a_directory_fsync_that_fails_keeps_the_clip_wiping_until_a_re_check(bench, monkeypatch):
    cfg, q, cam, clips, clock = bench()
    victim = clips[0]
    _fsync_failing_on_dirs(monkeypatch, errno.EIO)
    res = run_gate(cfg, q, cam, clock, clips=[victim])
    assert res.wiped == [] and [cid for cid, _ in res.refused] == [victim.id]
    assert q.clip(victim.id).state is ClipState.WIPING and not (cam / victim.path).exists()
    assert cam_state(q) is CameraState.WIPING
    assert events(q, victim.id, "wipe.incomplete") and events(q, victim.id, "clip.wiped") == []
    monkeypatch.undo()
    res = run_gate(cfg, q, cam, clock, clips=[q.clip(victim.id)])
    assert res.wiped == [victim.id]
    [ev] = events(q, victim.id, "clip.wiped")
    assert ev["detail"]["receipt"]["confirmed"] == "found gone on re-check"
    assert ev["detail"]["receipt"]["dir_synced"] is True


# ------------------------------------------------------------------ a real SIGKILL at the hook point

CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from dockd import config
from dockd.queue.store import Queue
from dockd.camera.volume import Volume
from dockd.station.wipe import wipe_clips
cfg = config.load(sys.argv[2])
point = sys.argv[4]
q = Queue(cfg.data_dir / "queue.db")

def hook(p, cid):
    if p == point:
        print("at", p, cid, flush=True)
        time.sleep(600)  # held here until killed

with Volume(sys.argv[3]) as vol:
    wipe_clips(cfg, q, vol, q.clips(state="uploaded"), lock_ok=lambda: False, hook=hook)
print("finished", flush=True)
"""


def kill_wipe_at(cfg, cam: Path, point: str) -> int:
    """Run the wipe in a child process, SIGKILL it at ``point``; return the clip id it was wiping."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(REPO), str(cfg.path), str(cam), point],
                             stdout=subprocess.PIPE, text=True)
    try:
        line = run_bounded(child.stdout.readline, 60, f"the wipe never reached {point}")
        assert line.startswith(f"at {point} "), line
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    return int(line.split()[2])


@pytest.mark.parametrize("point", ["intent", "clip_unlinked"])
def test_sigkill_mid_wipe_in_a_plain_dir(bench, point):
    cfg, q, cam, clips, clock = bench()
    q.close()
    killed = kill_wipe_at(cfg, cam, point)
    q = Queue(cfg.data_dir / "queue.db")
    assert q.clip(killed).state is ClipState.WIPING and cam_state(q) is CameraState.WIPING
    q.close()
    assert redock(cfg, cam) == 0
    receipts = assert_wiped_once_and_ready_after(cfg, cam, [c.id for c in clips])
    assert receipts[killed]["resumed"] == "an interrupted wipe"


@pytest.fixture
def exfat_camera(tmp_path):
    """A real exFAT image (two clips, a sidecar each) on a loop device, mounted rw at cams/CAM1.

    Yields (mount point, remount()) where remount() unmounts, detaches and attaches it afresh (a re-dock)."""
    ok, why = exfat.can_use_exfat()
    if not ok:
        pytest.skip(why)
    files = {}
    for i, size in enumerate((40_000, 50_000), 1):
        files[f"DCIM/100MEDIA/CLIP{i:04d}.MP4"] = os.urandom(size)
        files[f"DCIM/100MEDIA/CLIP{i:04d}.XML"] = f"<meta clip='{i}'/>".encode()
    img = exfat.build_image(tmp_path / "cam.img", files=files)
    mnt = tmp_path / "cams" / SERIAL
    state = {"dev": exfat.attach_loop(img.path)}
    exfat.mount_exfat(state["dev"], mnt, read_only=False)

    def remount() -> None:
        exfat.unmount(mnt)
        exfat.detach_loop(state["dev"])
        state["dev"] = exfat.attach_loop(img.path)
        exfat.mount_exfat(state["dev"], mnt, read_only=False)

    try:
        yield mnt, remount
    finally:
        exfat.unmount(mnt)
        exfat.detach_loop(state["dev"])


@pytest.mark.parametrize("point", ["intent", "dir_fsynced"])
def test_sigkill_mid_wipe_on_a_real_exfat_camera(tmp_path, exfat_camera, point):
    mnt, remount = exfat_camera
    share = tmp_path / "share"
    share.mkdir()
    cfg = make_config(tmp_path, storage={"url": f"file://{share}"}, offload={"sidecar_globs": ["DCIM/**/*.XML"]})
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    q = Queue(cfg.data_dir / "queue.db")
    clock = Clock()
    clips = stage(cfg, q, mnt, clock)
    drain(Uploader(cfg, q, open_backend(cfg.storage), owner="t", clock=clock), q, clock)
    q.close()

    killed = kill_wipe_at(cfg, mnt, point)
    remount()  # the camera is taken out and docked again: a fresh mount of the same volume
    q = Queue(cfg.data_dir / "queue.db")
    assert q.clip(killed).state is ClipState.WIPING and cam_state(q) is CameraState.WIPING
    q.close()

    assert redock(cfg, mnt) == 0
    remount()  # read back what is on the volume through a fresh mount, not the daemon's view
    left = sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*") if p.is_file())
    assert left == [], left
    receipts = assert_wiped_once_and_ready_after(cfg, mnt, [c.id for c in clips])
    assert receipts[killed]["confirmed"] == ("deleted on re-check" if point == "intent" else "found gone on re-check")
