"""The offloader end to end on real files: sidecars, resume, crash recovery, injected faults, disk space."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from dockd.core.lifecycle import ClipEvent, ClipState
from dockd.evidence import copier, durable
from dockd.evidence import manifest as mf
from dockd.evidence.copier import Cancelled
from dockd.station import offloader as offmod
from tests.support import scratch
from tests.support.faults import FailingOS
from tests.support.offloader_helpers import T0, Station, make_volume, wrong_hash_wrapper


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def station(tmp_path):
    s = Station(tmp_path)
    yield s
    s.q.close()


@pytest.fixture
def volume(tmp_path):
    return make_volume(tmp_path / "vol", {
        "DCIM/100AXON/A.MP4": os.urandom(700_000),
        "DCIM/100AXON/A.XML": b"<meta>officer 1234</meta>",
        "DCIM/100AXON/A.GPS": b"$GPGGA,123519,4807.038,N",
        "DCIM/100AXON/B.MP4": os.urandom(100_000),
        "DCIM/101AXON/C.MP4": b"",
    })


# ------------------------------------------------------------------ full offload


def test_full_offload_with_sidecars(station, volume):
    s = station.offload(volume)
    assert (s.staged, s.already, s.aborted, s.quarantined, s.errors) == (3, 0, 0, 0, [])
    assert s.bytes == 800_000
    clips = {c.path: c for c in station.q.clips()}
    assert set(clips) == {"DCIM/100AXON/A.MP4", "DCIM/100AXON/B.MP4", "DCIM/101AXON/C.MP4"}
    for path, c in clips.items():
        data = (volume / path).read_bytes()
        assert c.state is ClipState.STAGED and c.sha256 == sha(data) and c.size == len(data)
        staged = Path(c.staged_path)
        assert staged.read_bytes() == data and staged.stat().st_mode & 0o777 == 0o600
        assert c.object_key == f"st1/CAM1/2025/12/29/{c.sha256}.mp4"
        assert c.verify_mode == "reread" and c.staged_at == T0 and c.lease_owner is None
        m = json.loads(station.off.manifest_path(c.id).read_bytes())
        assert m == json.loads(c.manifest)
        mf.check(m, station.key.public)
        mf.check_file_hash(m, str(staged))
        assert m["clip"] == {"sha256": c.sha256, "size": len(data), "path": path,
                             "mtime": "2025-12-29T09:20:00.123456789Z"}
        assert m["camera"] == {"serial": "CAM1", "vendor": "Axon"} and m["station"] == "st1"
        assert m["offloaded_at"] == "2026-01-01T00:00:00.000Z"
    a = clips["DCIM/100AXON/A.MP4"]
    m = json.loads(a.manifest)
    expect = [{"path": p, "size": len(b), "sha256": sha(b), "mtime": "2025-12-29T09:20:00.123456789Z"}
              for p, b in sorted((p, (volume / p).read_bytes()) for p in ("DCIM/100AXON/A.GPS",
                                                                          "DCIM/100AXON/A.XML"))]
    assert m["sidecars"] == expect
    rows = station.q.sidecars(a.id)
    assert [(r["path"], r["sha256"]) for r in rows] == [(e["path"], e["sha256"]) for e in expect]
    for r in rows:
        assert Path(r["staged_path"]).read_bytes() == (volume / r["path"]).read_bytes()
    assert json.loads(clips["DCIM/100AXON/B.MP4"].manifest)["sidecars"] == []
    # nothing half-written left behind; every name is id-based
    names = station.staging()
    assert not [n for n in names if n.endswith(".tmp")]
    assert len(names) == 3 + 3 + 2  # clips, manifests, sidecars
    ev = [r["event"] for r in station.q.audit_rows(clip=a.id)]
    assert ev == ["clip.discovered", "clip.copy_started", "clip.staged"]
    staged_ev = station.q.audit_rows(clip=a.id)[-1]["detail"]
    assert staged_ev["sha256"] == a.sha256 and staged_ev["sidecars"] == 2
    assert station.q.verify_audit()[1] is None
    # the camera's files are untouched (offload never writes or deletes)
    assert (volume / "DCIM/100AXON/A.MP4").stat().st_size == 700_000


def test_resume_second_offload_copies_nothing(station, volume):
    copied = []
    station.off.on_progress = lambda serial, n: copied.append(n)
    first = station.offload(volume)
    assert first.staged == 3 and sum(copied) >= 800_000
    before_files = {n: (station.off.staging / n).stat().st_mtime_ns for n in station.staging()}
    before_audit = len(station.q.audit_rows())
    copied.clear()
    second = station.offload(volume)
    assert (second.staged, second.already, second.bytes) == (0, 3, 0)
    assert copied == []
    assert {n: (station.off.staging / n).stat().st_mtime_ns for n in station.staging()} == before_files
    assert len(station.q.audit_rows()) == before_audit


def test_new_clip_on_a_later_dock_is_the_only_one_copied(station, volume):
    station.offload(volume)
    make_volume(volume, {"DCIM/100AXON/D.MP4": b"recorded later"})
    s = station.offload(volume)
    assert (s.staged, s.already) == (1, 3)


def test_identical_content_from_two_cameras(station, tmp_path):
    data = os.urandom(50_000)
    v1 = make_volume(tmp_path / "v1", {"DCIM/100/A.MP4": data})
    v2 = make_volume(tmp_path / "v2", {"DCIM/100/A.MP4": data})
    assert station.offload(v1, "CAM1").staged == 1
    assert station.offload(v2, "CAM2").staged == 1
    c1, c2 = station.q.clips()
    assert (c1.camera, c2.camera) == ("CAM1", "CAM2")
    assert c1.id != c2.id and c1.sha256 == c2.sha256 == sha(data)
    assert c1.staged_path != c2.staged_path and c1.object_key != c2.object_key
    assert Path(c1.staged_path).read_bytes() == Path(c2.staged_path).read_bytes() == data


def test_verify_none_does_not_reread(tmp_path, volume, monkeypatch):
    st = Station(tmp_path, verify="none")
    calls = []
    real = durable.sha256_file
    monkeypatch.setattr(durable, "sha256_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    try:
        s = st.offload(volume)
        assert s.staged == 3 and calls == []
        assert {c.verify_mode for c in st.q.clips()} == {"none"}
        assert {json.loads(c.manifest)["verify"] for c in st.q.clips()} == {"none"}
    finally:
        st.q.close()


# ------------------------------------------------------------------ crash recovery


def test_recover_resets_interrupted_copy_and_deletes_temp_files(station, volume):
    station.offload(volume)
    kept = set(station.staging())
    # a crash mid-copy: clip committed as copying, a half-written temp file on disk
    make_volume(volume, {"DCIM/100AXON/E.MP4": os.urandom(30_000)})
    c, _ = station.q.discover("CAM1", "DCIM/100AXON/E.MP4", 30_000,
                              (volume / "DCIM/100AXON/E.MP4").stat().st_mtime_ns, now=T0)
    station.q.transition(c.id, ClipEvent.COPY_STARTED, now=T0)
    tmp = station.off.staging / f"{c.id:010d}.clip.tmp"
    tmp.write_bytes(b"half a clip")
    stray = station.off.staging / "0000009999.clip"  # a final name the queue does not vouch for
    stray.write_bytes(b"?")
    got = station.off.recover()
    assert got["reset"] == [c.id]
    assert sorted(got["removed"]) == sorted([tmp.name, stray.name])
    assert got["missing"] == []
    assert not tmp.exists() and not stray.exists()
    assert set(station.staging()) == kept  # verified staged copies are kept
    assert station.q.clip(c.id).state is ClipState.DISCOVERED
    rec = [r for r in station.q.audit_rows() if r["event"] == "recovery.staging"]
    assert rec and rec[-1]["detail"]["reset_copies"] == [c.id]
    assert station.off.recover() == {"reset": [], "removed": [], "missing": []}  # idempotent
    # and the next dock copies it
    s = station.offload(volume)
    assert (s.staged, s.already) == (1, 3)
    assert station.q.clip(c.id).state is ClipState.STAGED


def test_recover_keeps_the_staged_copy_of_a_quarantined_clip(station, volume):
    """A clip the uploader quarantined (storage conflict) keeps its verified copy and manifest for investigation."""
    station.offload(volume)
    c = station.q.clips()[0]
    station.q.claim_upload("w", lease_s=60, now=T0)
    station.q.transition(c.id, ClipEvent.QUARANTINE, now=T0, detail={"reason": "conflict"})
    before = set(station.staging())
    got = station.off.recover()
    assert got["removed"] == [] and set(station.staging()) == before
    assert Path(c.staged_path).exists() and station.off.manifest_path(c.id).exists()


def test_recover_raises_alarm_for_missing_staged_copy(station, volume):
    station.offload(volume)
    victim = station.q.clips()[0]
    Path(victim.staged_path).unlink()
    got = station.off.recover()
    assert got["missing"] == [victim.id]
    assert [a["kind"] for a in station.q.alarms()] == [f"staged-missing-{victim.id}"]


# ------------------------------------------------------------------ injected faults


def test_reread_mismatch_once_is_retried_from_the_source(tmp_path, monkeypatch):
    vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": os.urandom(200_000)})
    read = []
    st = Station(tmp_path, on_progress=lambda s, n: read.append(n))
    calls = wrong_hash_wrapper(monkeypatch, times=1)
    try:
        s = st.offload(vol)
        assert (s.staged, s.quarantined) == (1, 0)
        assert len(calls) == 2 and sum(read) == 400_000  # copied twice from the camera
        c = st.q.clips()[0]
        assert c.state is ClipState.STAGED and c.sha256 == sha((vol / "DCIM/A.MP4").read_bytes())
        assert Path(c.staged_path).read_bytes() == (vol / "DCIM/A.MP4").read_bytes()
    finally:
        st.q.close()


def test_reread_mismatch_twice_quarantines_with_both_hashes(tmp_path, monkeypatch):
    data = os.urandom(200_000)
    vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": data, "DCIM/B.MP4": b"fine"})
    st = Station(tmp_path)
    calls = wrong_hash_wrapper(monkeypatch, times=2)  # A is copied first (sorted), B verifies fine
    try:
        s = st.offload(vol)
        assert (s.staged, s.quarantined) == (1, 1)
        a = st.q.clips()[0]
        assert a.path == "DCIM/A.MP4" and a.state is ClipState.QUARANTINED
        assert "verification twice" in a.last_error
        detail = st.q.audit_rows(clip=a.id)[-1]
        assert detail["event"] == "clip.quarantine"
        assert detail["detail"]["copied_sha256"] == sha(data)
        assert detail["detail"]["reread_sha256"] == "0" * 64
        assert detail["detail"]["reason"] == "verify mismatch"
        assert not [n for n in st.staging() if n.startswith(f"{a.id:010d}")]  # nothing kept for A
        assert len(calls) == 3
        # a quarantined clip is not retried on the next dock
        assert st.offload(vol).already == 2
    finally:
        st.q.close()


# copier, durable and the offloader take no os-like parameter: these tests install the FailingOS wrapper
# as the module's ``os`` (no seam yet; issue #11).


def test_write_error_deletes_temp_and_copies_again(tmp_path, monkeypatch):
    data = os.urandom(500_000)  # 8 writes of 64 KiB
    vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": data})
    st = Station(tmp_path)
    seen_tmp = []
    faulty = FailingOS(os, fail={"write": 3},
                       on_fail=lambda: seen_tmp.extend(n for n in st.staging() if n.endswith(".tmp")))
    monkeypatch.setattr(copier, "os", faulty)
    try:
        s = st.offload(vol)
        assert seen_tmp == ["0000000001.clip.tmp"]  # the failure happened while the temp file existed
        assert (s.staged, s.aborted) == (1, 0)
        assert faulty.calls["write"] == 3 + 8  # 2 writes, the failed one, then a full second copy
        c = st.q.clips()[0]
        assert c.state is ClipState.STAGED and c.sha256 == sha(data)
        assert Path(c.staged_path).read_bytes() == data
        assert not [n for n in st.staging() if n.endswith(".tmp")]
    finally:
        st.q.close()


def test_write_error_twice_aborts_and_leaves_nothing(tmp_path, monkeypatch):
    data = os.urandom(500_000)
    vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": data})
    st = Station(tmp_path)
    monkeypatch.setattr(copier, "os", FailingOS(os, fail={"write": {2, 5}}))
    try:
        s = st.offload(vol)
        assert (s.staged, s.aborted) == (0, 1)
        assert "staging write failed" in s.errors[0] and "Input/output error" in s.errors[0]
        c = st.q.clips()[0]
        assert c.state is ClipState.DISCOVERED and "staging write failed" in c.last_error
        assert st.staging() == []
        monkeypatch.undo()
        assert st.offload(vol).staged == 1  # the next dock copies it
    finally:
        st.q.close()


def test_write_error_then_reread_mismatch_spends_the_two_copy_budget(tmp_path, monkeypatch):
    """A clip gets two copies from the camera whatever failed: a write error on the first copy
    and a re-read mismatch on the second quarantine it (no third copy)."""
    data = os.urandom(500_000)
    vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": data})
    read = []
    st = Station(tmp_path, on_progress=lambda s, n: read.append(n))
    monkeypatch.setattr(copier, "os", FailingOS(os, fail={"write": 2}))
    calls = wrong_hash_wrapper(monkeypatch, times=1)
    try:
        s = st.offload(vol)
        assert (s.staged, s.quarantined, s.aborted) == (0, 1, 0)
        assert len(calls) == 1  # one re-read: of the second copy
        assert sum(read) < 2 * len(data) + 1  # the first copy stopped early, the second was whole; no third
        assert st.q.clips()[0].state is ClipState.QUARANTINED
        assert not [n for n in st.staging() if n.endswith(".tmp")]
    finally:
        st.q.close()


def test_fsync_error_is_never_retried_on_the_same_file(tmp_path, monkeypatch):
    data = os.urandom(100_000)
    vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": data})
    st = Station(tmp_path)
    faulty = FailingOS(os, fail={"fsync": 1})
    monkeypatch.setattr(offmod, "os", faulty)
    try:
        s = st.offload(vol)
        assert s.staged == 1 and faulty.calls["fsync"] == 2  # a fresh temp file, a fresh fsync
        assert Path(st.q.clips()[0].staged_path).read_bytes() == data
    finally:
        st.q.close()


def test_manifest_write_error_aborts_the_clip_not_the_offload(tmp_path, monkeypatch):
    """A failed manifest write must not leave the clip in `copying` nor stop the other clips."""
    vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": b"first", "DCIM/B.MP4": b"second"})
    st = Station(tmp_path)
    monkeypatch.setattr(durable, "os", FailingOS(os, fail={"write": 1}))
    try:
        s = st.offload(vol)
        assert (s.staged, s.aborted) == (1, 1)
        a, b = st.q.clips()
        assert a.state is ClipState.DISCOVERED and "manifest" in a.last_error
        assert b.state is ClipState.STAGED
        assert not [n for n in st.staging() if n.startswith("0000000001")]
        monkeypatch.undo()
        assert st.offload(vol).staged == 1
    finally:
        st.q.close()


def test_cancel_mid_copy_aborts_cleanly(tmp_path):
    vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": os.urandom(1 << 20)})
    cancel = threading.Event()
    st = Station(tmp_path, on_progress=lambda s, n: cancel.set(), buffer_kb=16)
    try:
        with pytest.raises(Cancelled):
            st.offload(vol, cancel=cancel)
        c = st.q.clips()[0]
        assert c.state is ClipState.DISCOVERED and "cancelled" in c.last_error
        assert st.staging() == []
    finally:
        st.q.close()


# ------------------------------------------------------------------ disk-space guard


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs mounted for the test (root only)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    with scratch.mounted("tmpfs", "size=4m,mode=0700", mnt):
        yield mnt


def test_disk_space_guard_pauses_and_cancels(tmp_path, small_fs):
    vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": os.urandom(10_000)})
    cancel = threading.Event()
    statuses = []

    def on_status(serial, reason):
        statuses.append((serial, reason))
        cancel.set()  # the technician undocks while we wait

    st = Station(tmp_path, data_dir=small_fs / "data", on_status=on_status, reserve_free_mb=2)
    (small_fs / "ballast").write_bytes(b"\1" * (3 << 20))  # 1 MiB left: less than the reserve
    box = {}

    def go():
        try:
            st.offload(vol, cancel=cancel)
        except BaseException as e:  # noqa: BLE001
            box["e"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(60)
    try:
        assert not t.is_alive()
        assert isinstance(box.get("e"), Cancelled)
        assert len(statuses) == 1 and statuses[0][0] == "CAM1" and "staging disk full" in statuses[0][1]
        c = st.q.clips()[0]
        assert c.state is ClipState.DISCOVERED  # never started copying
        assert st.staging() == []
        paused = [r for r in st.q.audit_rows() if r["event"] == "offload.paused"]
        assert len(paused) == 1 and "reserve 2 MiB" in paused[0]["detail"]["reason"]
    finally:
        st.q.close()


def test_disk_space_guard_resumes_when_space_is_freed(tmp_path, small_fs):
    st_ = Station(tmp_path, data_dir=small_fs / "data", reserve_free_mb=1)
    ballast = small_fs / "ballast"
    ballast.write_bytes(b"\1" * (3 << 20))
    statuses = []

    def on_status(serial, reason):
        statuses.append(reason)
        if reason:
            ballast.unlink()  # someone frees space while we wait

    st_.off.on_status = on_status
    try:
        st_.off.wait_for_space("CAM1", 1 << 20, threading.Event(), poll_s=0.01)
        assert len(statuses) == 2 and "paused" in statuses[0] and statuses[1] is None
        # and with plenty of room it returns at once without reporting anything
        statuses.clear()
        st_.off.wait_for_space("CAM1", 1000, threading.Event(), poll_s=0.01)
        assert statuses == []
    finally:
        st_.q.close()


def test_a_clip_bigger_than_the_staging_disk_is_refused_not_waited_for(tmp_path, small_fs):
    """It could never fit: no copy is started, the reason is reported, the other clips go on, nothing wedged.
    (ENOSPC during a copy is a pause instead: tests/e2e/test_space.py.)"""
    vol = make_volume(tmp_path / "vol", {"DCIM/A.MP4": os.urandom(6 << 20), "DCIM/B.MP4": b"small"})
    st = Station(tmp_path, data_dir=small_fs / "data", reserve_free_mb=0)
    try:
        s = scratch.run_bounded(lambda: st.offload(vol), 60, "offload waited for space that can never come")
        assert (s.staged, s.aborted) == (1, 1)
        assert s.errors[0].startswith("DCIM/A.MP4: not copied: needs 6 MiB plus reserve 0 MiB; "
                                      "the staging disk holds 4 MiB")
        a, b = st.q.clips()
        assert a.state is ClipState.DISCOVERED and b.state is ClipState.STAGED
        assert [r["event"] for r in st.q.audit_rows(clip=a.id)] == ["clip.discovered", "offload.too_large"]
        assert not [n for n in st.staging() if n.startswith(f"{a.id:010d}")]
        assert st.off.space.reserved == 0
    finally:
        st.q.close()


def test_clip_changed_before_copy_is_quarantined_not_forgotten(station, tmp_path):
    vol = make_volume(tmp_path / "v2", {"DCIM/100AXON/C.MP4": b"first version"})
    clip, _ = station.q.discover("CAM1", "DCIM/100AXON/C.MP4", 13, 1_767_000_000_123_456_789, now=T0)
    # Before the clip could be copied (e.g. undocked) the camera's file changed.
    (vol / "DCIM/100AXON/C.MP4").write_bytes(b"second, longer version")
    s = station.offload(vol)
    old = station.q.clip(clip.id)
    assert old.state is ClipState.QUARANTINED and "changed or removed" in old.last_error
    assert s.staged == 1  # the new content is a clip of its own and is copied
    new = [c for c in station.q.clips(camera="CAM1") if c.id != clip.id]
    assert len(new) == 1 and new[0].state is ClipState.STAGED and new[0].size == 22


# ------------------------------------------------------------------ the two-stage pipeline (copy N while finishing N-1)


def staging_known_to_queue(st: Station) -> set[str]:
    """Every staging file name the queue vouches for (staged clips: copy, manifest, sidecars)."""
    names: set[str] = set()
    for c in st.q.clips(state=ClipState.STAGED):
        names.add(Path(c.staged_path).name)
        names.add(st.off.manifest_path(c.id).name)
        names.update(Path(r["staged_path"]).name for r in st.q.sidecars(c.id))
    return names


@pytest.mark.parametrize("second_clip", ["staged", "cancelled", "racing"])
def test_cancel_in_the_middle_of_a_multi_clip_offload(tmp_path, second_clip):
    """Cancel while clip 3 is copied and clip 2 is being finished by the other thread.

    ``second_clip`` decides where clip 2's finishing stage is when the cancel
    comes: already committed, not yet at its re-read (so it sees the cancel), or
    wherever the threads happen to be."""
    size = (1 << 20) + 123  # unaligned: the staged copy's tail goes through the page cache
    files = {f"DCIM/100AXON/C{i}.MP4": os.urandom(size) for i in range(6)}
    vol = make_volume(tmp_path / "vol", files)
    cancel = threading.Event()
    second_done = threading.Event()
    copied: list[int] = []

    def on_progress(serial, n):
        assert serial == "CAM1"
        copied.append(n)
        if sum(copied) > 2 * size and not cancel.is_set():  # the 3rd clip has started copying
            if second_clip == "staged":
                assert second_done.wait(30)
            cancel.set()

    st = Station(tmp_path, on_progress=on_progress)
    mtime = (vol / "DCIM/100AXON/C0.MP4").stat().st_mtime_ns
    ids = [c.id for _, c in sorted(st.q.discover_many("CAM1", [(p, size, mtime) for p in files], now=T0).items())]
    real_finish, real_verify = st.off._finish_stage, st.off._verify_and_publish

    def finish(job):
        try:
            return real_finish(job)
        finally:
            if job.clip_id == ids[1]:
                second_done.set()

    def verify(tmp, dest, *a, **k):
        if second_clip == "cancelled" and dest == st.off.staged_path(ids[1]):
            assert cancel.wait(30)
        return real_verify(tmp, dest, *a, **k)

    st.off._finish_stage, st.off._verify_and_publish = finish, verify
    threads = threading.active_count()
    try:
        with pytest.raises(Cancelled):
            st.offload(vol, cancel=cancel)
        assert threading.active_count() == threads  # the finishing thread is gone too
        clips = st.q.clips()
        assert [c.id for c in clips] == ids and [c.path for c in clips] == sorted(files)
        assert not [c for c in clips if c.state is ClipState.COPYING]
        assert {c.state for c in clips} <= {ClipState.STAGED, ClipState.DISCOVERED}
        # clip 1 was finished before clip 2 was handed over; clip 3 was being copied when cancelled
        assert clips[0].state is ClipState.STAGED
        if second_clip == "staged":
            assert clips[1].state is ClipState.STAGED
        elif second_clip == "cancelled":
            assert clips[1].state is ClipState.DISCOVERED and "cancelled" in clips[1].last_error
        assert clips[2].state is ClipState.DISCOVERED and "cancelled" in clips[2].last_error
        assert all(c.state is ClipState.DISCOVERED and c.last_error is None for c in clips[3:])
        for c in clips:
            if c.state is ClipState.STAGED:
                assert Path(c.staged_path).read_bytes() == files[c.path]
                assert st.off.manifest_path(c.id).exists()
            else:
                assert c.staged_path is None and c.sha256 is None
        names = set(st.staging())
        assert not [n for n in names if n.endswith(".tmp")]
        assert names == staging_known_to_queue(st)  # nothing the queue does not vouch for
        assert st.q.verify_audit()[1] is None
        staged_first = sum(c.state is ClipState.STAGED for c in clips)

        st.off.on_progress = None
        s = st.offload(vol)
        assert (s.staged, s.already, s.aborted, s.quarantined) == (6 - staged_first, staged_first, 0, 0)
        for c in st.q.clips():
            assert c.state is ClipState.STAGED and c.sha256 == sha(files[c.path])
            assert durable.sha256_file(c.staged_path, uncached=True) == (c.sha256, size)
            mf.check_file_hash(json.loads(st.off.manifest_path(c.id).read_bytes()), c.staged_path)
        assert set(st.staging()) == staging_known_to_queue(st) and len(st.staging()) == 12
    finally:
        st.q.close()


def test_reread_mismatch_on_one_clip_of_several_quarantines_only_that_clip(tmp_path, monkeypatch):
    files = {f"DCIM/{n}.MP4": os.urandom(300_000 + i * 1000) for i, n in enumerate("ABCD")}
    files["DCIM/B.XML"] = b"<meta>B</meta>"  # the bad clip's sidecar must not be left behind either
    vol = make_volume(tmp_path / "vol", files)
    lock = threading.Lock()
    copied: list[int] = []

    def on_progress(serial, n):
        with lock:
            copied.append(n)

    st = Station(tmp_path, on_progress=on_progress)
    mtime = (vol / "DCIM/A.MP4").stat().st_mtime_ns
    ids = {p: c.id for (p, _, _), c in st.q.discover_many(
        "CAM1", [(p, len(b), mtime) for p, b in files.items() if p.endswith(".MP4")], now=T0).items()}
    bad = st.off.staged_path(ids["DCIM/B.MP4"]).name + durable.TMP_SUFFIX
    real = durable.sha256_file
    rereads: list[str] = []

    def faulty(path, **kw):
        got, n = real(path, **kw)
        with lock:
            rereads.append(Path(path).name)
        return ("0" * 64, n) if Path(path).name == bad else (got, n)

    monkeypatch.setattr(durable, "sha256_file", faulty)
    try:
        s = st.offload(vol)
        assert (s.staged, s.quarantined, s.aborted) == (3, 1, 0)
        assert rereads.count(bad) == 2  # re-read, copied again from the camera, re-read again
        clip_bytes = sum(len(b) for p, b in files.items() if p.endswith(".MP4"))
        assert sum(copied) == clip_bytes + len(files["DCIM/B.MP4"])  # only B was copied twice; no sidecar
        b = st.q.clip(ids["DCIM/B.MP4"])
        assert b.state is ClipState.QUARANTINED and "verification twice" in b.last_error
        last = st.q.audit_rows(clip=b.id)[-1]
        assert last["event"] == "clip.quarantine"
        assert last["detail"]["copied_sha256"] == sha(files["DCIM/B.MP4"])
        assert last["detail"]["reread_sha256"] == "0" * 64
        assert not [n for n in st.staging() if n.startswith(f"{b.id:010d}")]
        for p in ("DCIM/A.MP4", "DCIM/C.MP4", "DCIM/D.MP4"):
            c = st.q.clip(ids[p])
            assert c.state is ClipState.STAGED and c.sha256 == sha(files[p])
            assert Path(c.staged_path).read_bytes() == files[p]
        assert set(st.staging()) == staging_known_to_queue(st)
        assert not [n for n in st.staging() if n.endswith(".tmp")]
        assert st.offload(vol).already == 4  # quarantined is not retried; the others are done
    finally:
        st.q.close()


# ------------------------------------------------------------------ media and clock facts in the signed manifest


def _mp4(path: Path, created: str) -> bytes:
    import subprocess

    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc=duration=2:size=320x240:rate=10", "-c:v", "mpeg4", "-q:v", "10",
                    "-metadata", f"creation_time={created}", "-f", "mp4", str(path)], check=True, timeout=60)
    return path.read_bytes()


@pytest.mark.skipif(not __import__("shutil").which("ffprobe"), reason="ffmpeg not installed")
def test_media_and_clock_facts_are_signed_into_the_manifest(tmp_path):
    st = Station(tmp_path / "st")
    vol = make_volume(tmp_path / "vol", {"DCIM/100AXON/A.MP4": _mp4(tmp_path / "a.mp4", "2025-12-29T09:19:58Z"),
                                         "DCIM/100AXON/B.MP4": os.urandom(50_000)})
    s = st.offload(vol)
    assert (s.staged, s.errors) == (2, [])
    by_path = {c.path: c for c in st.q.clips()}
    a = json.loads(by_path["DCIM/100AXON/A.MP4"].manifest)
    mf.check(a, st.key.public)  # the facts are under the signature
    assert a["media"]["ok"] is True
    assert (a["media"]["duration_s"], a["media"]["created_at"], a["media"]["codecs"], a["media"]["width"],
            a["media"]["height"], a["media"]["streams"]) == (2.0, "2025-12-29T09:19:58.000Z", ["mpeg4"], 320, 240, 1)
    b = json.loads(by_path["DCIM/100AXON/B.MP4"].manifest)
    assert b["media"]["ok"] is False and b["media"]["reason"] == "unreadable"
    for m in (a, b):
        assert m["station_clock"]["source"] in ("adjtimex", "unavailable")
        assert set(m["station_clock"]) == {"synchronised", "est_error_us", "max_error_us", "status", "source"}
    if __import__("shutil").which("jq"):  # the README recipe still reproduces the signed bytes
        import subprocess

        for c in by_path.values():
            body = subprocess.run(["jq", "-cjS", "del(.signature)", str(st.off.manifest_path(c.id))],
                                  capture_output=True, check=True).stdout
            assert body == mf.canonical_body(json.loads(c.manifest))
    rows = st.q.audit_rows(clip=by_path["DCIM/100AXON/B.MP4"].id)
    assert [r["detail"]["media"] for r in rows if "media" in (r["detail"] or {})] == ["unreadable"]
    st.q.close()


def test_missing_ffprobe_is_recorded_and_the_offload_completes(tmp_path):
    st = Station(tmp_path / "st", ffprobe=str(tmp_path / "nowhere" / "ffprobe"))
    vol = make_volume(tmp_path / "vol", {"DCIM/100AXON/A.MP4": b"\0\0\0\x18ftypisom\0\0\0\0isom" + b"x" * 100})
    s = st.offload(vol)
    assert (s.staged, s.errors) == (1, [])
    (c,) = st.q.clips()
    assert c.state is ClipState.STAGED
    assert json.loads(c.manifest)["media"] == {"ok": False, "reason": "unavailable",
                                              "detail": f"{tmp_path / 'nowhere' / 'ffprobe'}: not found"}
    st.q.close()


def test_media_probe_off_leaves_media_out_and_keeps_clock_facts(tmp_path):
    st = Station(tmp_path / "st", media_probe=False)
    s = st.offload(make_volume(tmp_path / "vol", {"DCIM/100AXON/A.MP4": os.urandom(1000)}))
    assert s.staged == 1
    m = json.loads(st.q.clips()[0].manifest)
    assert "media" not in m and "station_clock" in m
    st.q.close()


@pytest.mark.skipif(not __import__("shutil").which("ffprobe"), reason="ffmpeg not installed")
def test_a_copy_made_again_is_probed_again(tmp_path, monkeypatch):
    """The early probe read the first copy; after a re-read mismatch the second copy is what gets signed,
    so its facts come from a probe of that copy (counted here), never from the discarded one."""
    st = Station(tmp_path / "st")
    calls = wrong_hash_wrapper(monkeypatch, times=1)
    probed = []
    real = st.off.prober.probe
    monkeypatch.setattr(st.off.prober, "probe", lambda p: probed.append(p) or real(p))
    vol = make_volume(tmp_path / "vol", {"DCIM/100AXON/A.MP4": _mp4(tmp_path / "a.mp4", "2025-12-29T09:19:58Z")})
    s = st.offload(vol)
    assert (s.staged, s.quarantined) == (1, 0) and len(calls) == 2
    (c,) = st.q.clips()
    assert probed == [Path(c.staged_path)]  # the published second copy, probed after the early answer was dropped
    m = json.loads(c.manifest)
    assert m["media"]["ok"] is True and m["media"]["created_at"] == "2025-12-29T09:19:58.000Z"
    st.q.close()
