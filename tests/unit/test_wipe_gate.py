"""The wipe gate (dockd/station/wipe.py): the only code that deletes from a camera.

Clips are staged by the real Offloader from a camera directory and uploaded
by the real Uploader to a ``file://`` share (FileBackend; the gate itself
never talks to storage except to ask whether Object Lock is enforced, which
test_uploader.py covers against SeaweedFS). Time is injected.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockd.core.lifecycle import ClipState
from dockd.station.wipe import prune_staging
from tests.support.uploads import make_config
from tests.support.wipe_gate_helpers import _same_size_other_content, events, run_gate


def test_wipe_after_verified_upload_writes_a_receipt(bench):
    cfg, q, cam, clips, clock = bench()
    res = run_gate(cfg, q, cam, clock)
    assert sorted(res.wiped) == sorted(c.id for c in clips) and res.refused == []
    for c in clips:
        assert not (cam / c.path).exists()
        assert q.clip(c.id).state is ClipState.WIPED
        [ev] = events(q, c.id, "clip.wiped")
        receipt = ev["detail"]["receipt"]
        assert receipt == {"object_key": c.object_key, "sha256": c.sha256, "size": c.size, "path": c.path,
                           "checked": "sha256", "confirmed": "after deletion", "dir_synced": True}
        [up] = events(q, c.id, "clip.uploaded")
        [intent] = events(q, c.id, "clip.wipe_started")
        # the verified upload, then the intent, are on record before the receipt
        assert up["seq"] < intent["seq"] < ev["seq"]
        assert intent["detail"]["intent"] == {"path": c.path, "sidecars": [], "checked": "sha256"}
    n, bad = q.verify_audit()
    assert bad is None and n > 0


def test_clips_not_uploaded_are_never_wiped(bench):
    cfg, q, cam, clips, clock = bench(upload_now=False)
    res = run_gate(cfg, q, cam, clock)
    assert res.wiped == []
    assert all((cam / c.path).exists() for c in clips)
    assert all(q.clip(c.id).state is ClipState.STAGED for c in clips)


@pytest.mark.parametrize("change", ["grown", "touched", "same-size-other-content", "deleted"])
def test_source_changed_after_upload_is_refused(bench, change):
    cfg, q, cam, clips, clock = bench()
    victim, other = clips
    p = cam / victim.path
    if change == "grown":
        with open(p, "ab") as f:
            f.write(b"more")
    elif change == "touched":
        os.utime(p, (1_800_000_000, 1_800_000_000))
    elif change == "same-size-other-content":
        _same_size_other_content(p)
    else:
        p.unlink()
    res = run_gate(cfg, q, cam, clock)
    assert res.wiped == [other.id]
    assert [cid for cid, _ in res.refused] == [victim.id]
    assert p.exists() is (change != "deleted")  # kept on the camera
    assert q.clip(victim.id).state is ClipState.UPLOADED
    [ev] = events(q, victim.id, "wipe.refused")
    assert ev["detail"]["reason"]
    assert q.clip(victim.id).last_error.startswith("wipe refused:")
    # the daemon passes clips through the gate again later: refused again, said once
    res2 = run_gate(cfg, q, cam, clock, clips=[q.clip(victim.id)])
    assert res2.wiped == [] and len(events(q, victim.id, "wipe.refused")) == 1


def test_wipe_check_stat_does_not_hash(bench):
    cfg, q, cam, clips, clock = bench({"wipe_check": "stat"})
    victim = clips[0]
    _same_size_other_content(cam / victim.path)  # only a hash could notice
    res = run_gate(cfg, q, cam, clock)
    assert victim.id in res.wiped
    assert not (cam / victim.path).exists()
    [ev] = events(q, victim.id, "clip.wiped")
    assert ev["detail"]["receipt"]["checked"] == "stat"


def test_wipe_never_keeps_everything(bench):
    cfg, q, cam, clips, clock = bench({"wipe": "never"})
    res = run_gate(cfg, q, cam, clock)
    assert res.wiped == [] and res.refused == []
    assert all((cam / c.path).exists() for c in clips)
    assert all(q.clip(c.id).state is ClipState.UPLOADED for c in clips)


def test_without_storage_nothing_is_wiped(bench, tmp_path):
    cfg, q, cam, clips, clock = bench()
    no_storage = make_config(tmp_path, storage=None, name="nostorage.toml")
    assert no_storage.storage is None
    res = run_gate(no_storage, q, cam, clock)
    assert res.wiped == []
    assert all((cam / c.path).exists() for c in clips)


def test_object_lock_not_enforced_refuses_every_wipe(bench, tmp_path):
    cfg, q, cam, clips, clock = bench()
    share = cfg.storage.url
    locked_cfg = make_config(tmp_path, storage={"url": share, "object_lock_days": 1}, name="lock.toml")
    asked = []
    res = run_gate(locked_cfg, q, cam, clock, lock_ok=lambda: asked.append(1) or False)
    assert res.wiped == [] and len(res.refused) == len(clips)
    assert len(asked) == 1  # asked once per batch
    assert [a["kind"] for a in q.alarms()] == ["object-lock"]
    assert all((cam / c.path).exists() for c in clips)
    # a bucket that does enforce it lets them go
    res = run_gate(locked_cfg, q, cam, clock, lock_ok=lambda: True)
    assert sorted(res.wiped) == sorted(c.id for c in clips)


def test_sidecars_are_wiped_with_their_clip_and_guard_it(bench):
    cfg, q, cam, clips, clock = bench(sidecars=True)
    first, second = clips
    assert len(q.sidecars(first.id)) == 1
    side2 = cam / q.sidecars(second.id)[0]["path"]
    side2.write_text("<meta clip='2' edited='yes'/>")  # changed after offload
    res = run_gate(cfg, q, cam, clock)
    assert res.wiped == [first.id]
    assert not (cam / first.path).exists() and not (cam / q.sidecars(first.id)[0]["path"]).exists()
    assert q.sidecars(first.id)[0]["wiped_at"] is not None
    assert (cam / second.path).exists() and side2.exists()


def test_prune_staging_respects_keep_staged_hours(bench):
    cfg, q, cam, clips, clock = bench({"keep_staged_hours": 2.0})
    staged = [Path(c.staged_path) for c in clips]
    manifests = [cfg.data_dir / "staging" / f"{c.id:010d}.manifest.json" for c in clips]
    assert all(p.exists() for p in staged + manifests)
    uploaded_at = max(c.uploaded_at for c in clips)
    assert prune_staging(cfg, q, now=uploaded_at + 3600) == []  # 1 h: kept
    assert all(p.exists() for p in staged)
    pruned = prune_staging(cfg, q, now=uploaded_at + 2 * 3600 + 1)
    assert sorted(pruned) == sorted(c.id for c in clips)
    assert not any(p.exists() for p in staged + manifests)
    assert all(q.clip(c.id).staged_path is None for c in clips)
    assert [r for r in q.audit_rows() if r["event"] == "staging.pruned"][0]["detail"]["clips"] == pruned
    assert prune_staging(cfg, q, now=uploaded_at + 10 * 3600) == []  # nothing left to prune


def test_prune_staging_never_touches_clips_not_uploaded(bench):
    cfg, q, cam, clips, clock = bench(upload_now=False)
    assert prune_staging(cfg, q, now=clock() + 365 * 86400) == []
    assert all(Path(c.staged_path).exists() for c in clips)
