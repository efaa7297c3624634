"""The source verified ahead of its wipe (``wipe_check = "hash"``): read while uploads run, relied on at the gate
only while the file's identity is unchanged, recorded and audited before it is relied on.

Clips are staged and uploaded by the real Offloader and Uploader (``file://`` storage, see
tests/support/wipe_gate_helpers.py); the daemon tests dock the camera (a watched directory) in a real
in-process Daemon, as tests/e2e/test_wipe_crash.py does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockd.camera.volume import Volume
from dockd.core.events import CameraInfo, Docked
from dockd.core.lifecycle import ClipState
from dockd.queue import sourcechecks
from dockd.queue.store import Queue
from dockd.station import daemon as daemon_mod
from dockd.station import wipe as wipe_mod
from dockd.station.daemon import Daemon
from tests.support.scratch import run_bounded
from tests.support.wipe_gate_helpers import _same_size_other_content, events, run_gate

SERIAL = "CAM1"


def verify_all(q: Queue, cam: Path, clips) -> list[str | None]:
    with Volume(cam) as vol:
        return [wipe_mod.verify_sources(q, vol, q.clip(c.id)) for c in clips]


def no_reads(monkeypatch) -> None:
    """From here on, any read of a camera file by the gate fails the test."""
    def refuse(*_a, **_k):
        raise AssertionError("the gate read the source again")
    monkeypatch.setattr(wipe_mod, "hash_fd", refuse)


def redock(cfg, cam: Path) -> int:
    d = Daemon(cfg, drain=True, sources=[])
    d.events.put(Docked(CameraInfo(serial=SERIAL), root=cam))
    return run_bounded(d.run, 120, "the daemon did not drain after the dock")


def test_verified_ahead_the_gate_only_checks_identity(bench, monkeypatch):
    cfg, q, cam, clips, clock = bench(sidecars=True)
    assert verify_all(q, cam, clips) == [None, None]
    no_reads(monkeypatch)
    res = run_gate(cfg, q, cam, clock)
    assert sorted(res.wiped) == sorted(c.id for c in clips) and res.refused == []
    for c in clips:
        assert not (cam / c.path).exists()
        checks = events(q, c.id, "source.verified")
        assert {e["detail"]["path"] for e in checks} == {c.path, c.path[:-4] + ".XML"}
        assert all(e["detail"]["matched"] for e in checks)
        [intent] = events(q, c.id, "clip.wipe_started")
        [wiped] = events(q, c.id, "clip.wiped")
        assert max(e["seq"] for e in checks) < intent["seq"] < wiped["seq"]  # recorded before relied on
        r = wiped["detail"]["receipt"]
        assert r["checked"] == "sha256" and r["source_verified_at"] == checks[0]["at"]
        assert sourcechecks.proofs(q, c.id) == {}  # wiped: its proofs are gone with it
    assert q.verify_audit()[1] is None


@pytest.mark.parametrize("change", ["same-size-other-content", "rewritten-same-bytes", "touched", "grown",
                                    "deleted"])
def test_source_changed_after_verification_is_never_wiped_on_that_proof(bench, change):
    cfg, q, cam, clips, clock = bench()
    victim, other = clips
    assert verify_all(q, cam, clips) == [None, None]
    p = cam / victim.path
    data, st = p.read_bytes(), p.stat()
    if change == "same-size-other-content":  # size and mtime put back: only ctime (and the re-read) tell
        _same_size_other_content(p)
    elif change == "rewritten-same-bytes":  # a new file, the same bytes: re-read at the gate, then wiped
        p.unlink()
        p.write_bytes(data)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "touched":
        os.utime(p, (1_800_000_000, 1_800_000_000))
    elif change == "grown":
        with open(p, "ab") as f:
            f.write(b"more")
    else:
        p.unlink()
    res = run_gate(cfg, q, cam, clock)
    assert other.id in res.wiped
    [wiped_other] = events(q, other.id, "clip.wiped")
    assert "source_verified_at" in wiped_other["detail"]["receipt"]
    if change == "rewritten-same-bytes":
        assert victim.id in res.wiped and not p.exists()
        [w] = events(q, victim.id, "clip.wiped")
        assert "source_verified_at" not in w["detail"]["receipt"]  # relied on the gate's own read, not the proof
        return
    assert [cid for cid, _ in res.refused] == [victim.id]
    assert q.clip(victim.id).state is ClipState.UPLOADED
    assert p.exists() is (change != "deleted")
    if change == "same-size-other-content":
        assert p.read_bytes() != data
        assert "hashes to" in q.clip(victim.id).last_error


def test_verification_mismatch_refuses_as_the_gate_does_without_reading_again(bench, monkeypatch):
    cfg, q, cam, clips, clock = bench()
    victim, other = clips
    _same_size_other_content(cam / victim.path)  # the camera returns other bytes than were copied
    why = verify_all(q, cam, clips)
    assert why[1] is None and "content on camera hashes to" in why[0]
    [ev] = events(q, victim.id, "source.verified")
    assert ev["detail"]["matched"] is False and ev["detail"]["sha256"] != victim.sha256
    no_reads(monkeypatch)  # the mismatch of this very file is on record: no second read to refuse it
    res = run_gate(cfg, q, cam, clock)
    assert res.wiped == [other.id]
    [(cid, reason)] = res.refused
    assert cid == victim.id and reason == why[0]
    assert q.clip(victim.id).state is ClipState.UPLOADED and (cam / victim.path).exists()
    [refused] = events(q, victim.id, "wipe.refused")
    assert refused["detail"]["reason"] == why[0]


def test_daemon_verifies_while_uploading_and_wipes_on_the_proof(bench):
    cfg, q, cam, clips, clock = bench(upload_now=False)
    q.close()
    assert redock(cfg, cam) == 0
    q = Queue(cfg.data_dir / "queue.db")
    try:
        for c in clips:
            assert q.clip(c.id).state is ClipState.WIPED and not (cam / c.path).exists()
            [check] = events(q, c.id, "source.verified")  # read once ahead, never again at the gate
            [w] = events(q, c.id, "clip.wiped")
            assert check["detail"]["matched"] and w["detail"]["receipt"]["source_verified_at"] == check["at"]
        assert q.camera(SERIAL).state == "ready"
    finally:
        q.close()


@pytest.mark.parametrize("when", ["before", "after"])
def test_daemon_keeps_a_clip_changed_before_or_after_its_verification(bench, monkeypatch, when):
    """``before``: the re-read finds other bytes (refused as the gate refuses); ``after``: the file is
    rewritten (same size, mtime put back) between its verification and its wipe: never wiped on that proof."""
    cfg, q, cam, clips, clock = bench(upload_now=False)
    victim = clips[0]
    q.close()
    real = daemon_mod.verify_sources

    def verify(queue, vol, clip, cancel, **kw):
        if clip.id == victim.id and when == "before":
            _same_size_other_content(cam / clip.path)
        why = real(queue, vol, clip, cancel, **kw)
        if clip.id == victim.id and when == "after":
            _same_size_other_content(cam / clip.path)
        return why

    monkeypatch.setattr(daemon_mod, "verify_sources", verify)
    assert redock(cfg, cam) == 1  # the camera needs a person
    q = Queue(cfg.data_dir / "queue.db")
    try:
        c = q.clip(victim.id)
        assert c.state is ClipState.UPLOADED and "hashes to" in c.last_error and (cam / c.path).exists()
        assert q.clip(clips[1].id).state is ClipState.WIPED
        assert q.camera(SERIAL).state == "attention"
        [check] = events(q, victim.id, "source.verified")
        assert check["detail"]["matched"] is (when == "after")
    finally:
        q.close()


@pytest.mark.parametrize("changed", [False, True])
def test_a_proof_never_outlives_its_dock_nor_a_change(bench, changed):
    """The process dies right after a re-read was committed. The restarted station docks the camera again:
    the proof from before that dock is not relied on (the camera was out of our hands), the clip is re-read
    ahead again, then wiped on the new proof if unchanged, kept if it was rewritten (size, mtime put back)."""
    cfg, q, cam, clips, clock = bench()
    victim = clips[0]
    assert verify_all(q, cam, clips) == [None, None]
    q.close()  # the "crash": only what was committed is left
    if changed:
        _same_size_other_content(cam / victim.path)
    assert redock(cfg, cam) == (1 if changed else 0)
    q = Queue(cfg.data_dir / "queue.db")
    try:
        c = q.clip(victim.id)
        first, again = events(q, victim.id, "source.verified")  # read again in the new dock
        assert first["detail"]["matched"] and again["detail"]["matched"] is not changed
        if changed:
            assert c.state is ClipState.UPLOADED and "hashes to" in c.last_error and (cam / c.path).exists()
        else:
            assert c.state is ClipState.WIPED and not (cam / c.path).exists()
            [w] = events(q, victim.id, "clip.wiped")
            assert w["detail"]["receipt"]["source_verified_at"] == again["at"]
    finally:
        q.close()


def test_a_cancelled_verification_records_nothing(bench):
    """Undock or stop while a long clip is being re-read: the read stops, nothing is recorded."""
    import threading

    from dockd.evidence.copier import Cancelled

    cfg, q, cam, clips, clock = bench()
    stop = threading.Event()
    stop.set()
    with Volume(cam) as vol, pytest.raises(Cancelled):
        wipe_mod.verify_sources(q, vol, clips[0], stop)
    assert sourcechecks.proofs(q, clips[0].id) == {} and events(q, clips[0].id, "source.verified") == []
