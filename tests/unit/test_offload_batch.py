"""Batched ``staged`` commits (dockd/station/offloader.py ``_StagedBatch``): one staging-directory fsync and
one queue commit per batch of small clips, and never a ``staged`` row before the renames it vouches for are
durable; a crash before the batch's commit leaves clips that recovery copies again."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dockd.core.lifecycle import ClipEvent, ClipState
from dockd.evidence.copier import Cancelled
from dockd.station import offloader as offmod
from tests.support.offloader_helpers import Station, make_volume


@pytest.fixture
def st(tmp_path):
    s = Station(tmp_path)
    yield s
    s.q.close()


def _small_clips(n: int) -> dict[str, bytes]:
    return {f"DCIM/100AXON/C{i:03d}.MP4": os.urandom(3000 + i) for i in range(n)}


def _spy(st: Station, monkeypatch) -> list[tuple]:
    """Record, in order, each fsync of the staging directory (with the final names it then held) and each
    batch commit (with its clip ids)."""
    events: list[tuple] = []
    real_fsync, real_many = offmod.durable.fsync_dir, st.q.transition_many

    def fsync_dir(path):
        real_fsync(path)
        if Path(path) == st.off.staging:
            events.append(("fsync", {p.name for p in st.off.staging.iterdir() if not p.name.endswith(".tmp")}))

    def transition_many(moves):
        got = real_many(moves)
        kinds = {ev for _, ev, _ in moves}
        what = "commit" if kinds == {ClipEvent.STAGED} else "mark" if kinds == {ClipEvent.COPY_STARTED} else "other"
        events.append((what, [cid for cid, _, _ in moves]))
        return got

    monkeypatch.setattr(offmod.durable, "fsync_dir", fsync_dir)
    monkeypatch.setattr(st.q, "transition_many", transition_many)
    return events


def test_staged_is_committed_per_batch_after_one_directory_fsync(st, tmp_path, monkeypatch):
    n = offmod.BATCH_CLIPS + 4
    vol = make_volume(tmp_path / "vol", _small_clips(n))
    events = _spy(st, monkeypatch)
    s = st.offload(vol)
    assert (s.staged, s.aborted, s.errors) == (n, 0, [])
    commits = [e for e in events if e[0] == "commit"]
    # 20 small clips: two commits (16 + the 4 left at the end of the scan), two directory fsyncs
    assert [len(ids) for _, ids in commits] == [offmod.BATCH_CLIPS, 4]
    assert [e[0] for e in events if e[0] != "mark"] == ["fsync", "commit", "fsync", "commit"]
    # `copying` committed ahead for runs of up to 16 small clips, before any of them is copied
    assert [len(ids) for what, ids in events if what == "mark"] == [offmod.BATCH_CLIPS, 4]
    events = [e for e in events if e[0] != "mark"]
    clips = {c.id: c for c in st.q.clips()}
    assert all(c.state is ClipState.STAGED for c in clips.values())
    for i in range(0, len(events), 2):  # every clip committed was under its final names at the fsync before
        names, ids = events[i][1], events[i + 1][1]
        for cid in ids:
            assert Path(clips[cid].staged_path).name in names and st.off.manifest_path(cid).name in names
    staged_rows = [r for r in st.q.audit_rows() if r["event"] == "clip.staged"]
    assert [r["clip"] for r in staged_rows] == sorted(clips)  # still in clip order


def test_a_big_clip_or_the_last_one_is_committed_at_once(st, tmp_path, monkeypatch):
    monkeypatch.setattr(offmod, "BATCH_BIG", 50_000)
    files = _small_clips(3)
    files["DCIM/100AXON/C001.MP4"] = os.urandom(60_000)  # big: flushes the clip before it, then itself
    vol = make_volume(tmp_path / "vol", files)
    events = _spy(st, monkeypatch)
    assert st.offload(vol).staged == 3
    assert [len(e[1]) for e in events if e[0] == "commit"] == [1, 1, 1]


def test_a_crash_before_the_batch_commit_claims_nothing_and_recovery_copies_again(st, tmp_path, monkeypatch):
    vol = make_volume(tmp_path / "vol", _small_clips(5))

    real_many = st.q.transition_many

    def crash(moves):  # the process dies between the directory fsync and the `staged` commit
        if any(ev is ClipEvent.STAGED for _, ev, _ in moves):
            raise KeyboardInterrupt("killed")
        return real_many(moves)

    monkeypatch.setattr(st.q, "transition_many", crash)
    with pytest.raises(KeyboardInterrupt):
        st.offload(vol)
    monkeypatch.undo()
    assert {c.state for c in st.q.clips()} == {ClipState.COPYING}  # verified and signed, yet never `staged`
    assert st.staging()  # the copies and manifests are on disk under their final names
    got = st.off.recover()
    assert len(got["reset"]) == 5 and not st.staging()
    s = st.offload(vol)
    assert (s.staged, s.already) == (5, 0)
    for c in st.q.clips():
        assert c.state is ClipState.STAGED
        assert Path(c.staged_path).read_bytes() == (vol / c.path).read_bytes()
    assert st.q.verify_audit()[1] is None


def test_clips_marked_copying_ahead_but_never_started_go_back_to_discovered(st, tmp_path):
    vol = make_volume(tmp_path / "vol", _small_clips(6))
    cancel = threading.Event()
    st.off.on_progress = lambda serial, n: cancel.set()  # undocked during the first clip's copy
    with pytest.raises(Cancelled):
        st.offload(vol, cancel=cancel)
    clips = st.q.clips()
    assert {c.state for c in clips} == {ClipState.DISCOVERED}
    assert "cancelled" in clips[0].last_error  # the clip being copied
    for c in clips[1:]:  # marked `copying` in the same commit, never started: no error of theirs
        assert c.last_error is None
        events = [r["event"] for r in st.q.audit_rows(clip=c.id)]
        assert events == ["clip.discovered", "clip.copy_started", "clip.copy_aborted"]
    assert st.staging() == [] and st.off.space.reserved == 0
    assert st.q.verify_audit()[1] is None
    st.off.on_progress = None
    assert st.offload(vol).staged == 6
