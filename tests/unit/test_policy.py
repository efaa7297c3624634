"""The daemon's camera policy (dockd.core.policy) as a table: counts and circumstances in, verdict out."""

from __future__ import annotations

import pytest

from dockd.core.lifecycle import CameraState as C
from dockd.core.lifecycle import ClipState as S
from dockd.core.policy import WIPE_BATCH_S, Step, Verdict, after_wipe, camera_verdict, is_pending, needs_new_worker

AFTER = "after-upload"
NEVER = "never"

# (id, counts, aborted, refused, since_wipe, storage, wipe mode) -> (step, state, reason contains)
CASES = [
    ("nothing-left-ready", {}, 0, False, 0.0, True, AFTER, (Step.FINISH, C.READY, None)),
    ("all-wiped-ready", {S.WIPED: 3}, 0, False, 0.0, True, AFTER, (Step.FINISH, C.READY, None)),
    ("uploaded-nothing-pending-wipes-now", {S.UPLOADED: 2}, 0, False, 0.0, True, AFTER, (Step.WIPE, None, None)),
    ("wiping-left-over-wipes-now", {S.WIPING: 1}, 0, False, 0.0, True, AFTER, (Step.WIPE, None, None)),
    ("wiping-with-wipe-never-still-settled", {S.WIPING: 1}, 0, False, 0.0, True, NEVER, (Step.WIPE, None, None)),
    ("uploaded-while-staged-pending-waits", {S.UPLOADED: 1, S.STAGED: 1}, 0, False, 0.0, True, AFTER,
     (Step.WAIT, C.UPLOADING, None)),
    ("uploaded-while-pending-batch-due", {S.UPLOADED: 1, S.UPLOADING: 1}, 0, False, WIPE_BATCH_S + 0.1, True,
     AFTER, (Step.WIPE, None, None)),
    ("batch-not-yet-due-at-the-bound", {S.UPLOADED: 1, S.COPYING: 1}, 0, False, WIPE_BATCH_S, True, AFTER,
     (Step.WAIT, C.UPLOADING, None)),
    ("refused-last-pass-no-spin", {S.UPLOADED: 1}, 0, True, 1.0, True, AFTER, (Step.WAIT, C.WIPING, None)),
    ("refused-last-pass-retry-after-batch", {S.UPLOADED: 1}, 0, True, WIPE_BATCH_S + 1, True, AFTER,
     (Step.WIPE, None, None)),
    ("wipe-never-holding", {S.UPLOADED: 2}, 0, False, 99.0, True, NEVER,
     (Step.FINISH, C.HOLDING, "wiping is off")),
    ("no-storage-staged-is-final", {S.STAGED: 2}, 0, False, 0.0, False, AFTER,
     (Step.FINISH, C.HOLDING, "wiping is off")),
    ("no-storage-copying-waits", {S.STAGED: 1, S.COPYING: 1}, 0, False, 0.0, False, AFTER,
     (Step.WAIT, C.OFFLOADING, None)),
    ("storage-staged-waits-uploading", {S.STAGED: 1}, 0, False, 0.0, True, AFTER, (Step.WAIT, C.UPLOADING, None)),
    ("failed-attention", {S.FAILED: 1, S.WIPED: 2}, 0, False, 0.0, True, AFTER,
     (Step.FINISH, C.ATTENTION, "1 failed, 0 quarantined")),
    ("failed-but-pending-waits-attention", {S.QUARANTINED: 1, S.UPLOADING: 1}, 0, False, 0.0, True, AFTER,
     (Step.WAIT, C.ATTENTION, "0 failed, 1 quarantined")),
    ("aborted-copies-override-ready", {S.WIPED: 2, S.DISCOVERED: 1}, 1, False, 0.0, True, AFTER,
     (Step.FINISH, C.ATTENTION, "1 clip(s) could not be copied")),
    ("aborted-copies-override-holding", {S.STAGED: 1, S.DISCOVERED: 1}, 1, False, 0.0, False, AFTER,
     (Step.FINISH, C.ATTENTION, "--state discovered")),
    ("discovered-never-holds-open", {S.DISCOVERED: 4}, 0, False, 0.0, True, AFTER, (Step.FINISH, C.READY, None)),
]


@pytest.mark.parametrize(("counts", "aborted", "refused", "since", "storage", "mode", "want"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_camera_verdict(counts, aborted, refused, since, storage, mode, want):
    v = camera_verdict({str(k): n for k, n in counts.items()}, serial="CAM1", aborted=aborted, refused=refused,
                       since_wipe=since, storage_configured=storage, wipe_mode=mode)
    step, state, reason = want
    assert v.step is step
    assert v.state is state
    if reason is None:
        assert v.reason is None
    else:
        assert v.reason is not None and reason in v.reason


def test_wipe_verdict_carries_whether_clips_were_pending():
    kw = {"serial": "CAM1", "aborted": 0, "refused": False, "storage_configured": True, "wipe_mode": AFTER}
    assert camera_verdict({S.UPLOADED: 1}, since_wipe=0.0, **kw).pending is False
    assert camera_verdict({S.UPLOADED: 1, S.STAGED: 1}, since_wipe=WIPE_BATCH_S * 2, **kw).pending is True
    # and so does a wait (shift_verdict's early passes take it from there)
    assert camera_verdict({S.UPLOADED: 1, S.STAGED: 1}, since_wipe=0.0, **kw).pending is True
    assert camera_verdict({S.UPLOADED: 1}, since_wipe=0.0, **{**kw, "refused": True}).pending is False


@pytest.mark.parametrize(("pending", "refusals", "want"), [
    (False, [], None),
    (True, ["source changed"], None),
    (True, [], None),
    (False, ["object lock not enforced", "source changed"],
     Verdict(Step.FINISH, C.ATTENTION,
             "2 uploaded clip(s) were not wiped and stay on the camera: object lock not enforced")),
])
def test_after_wipe(pending, refusals, want):
    assert after_wipe(Verdict(Step.WIPE, pending=pending), refusals) == want


@pytest.mark.parametrize(("counts", "storage", "want"), [
    ({}, True, False),
    ({S.STAGED: 1}, True, True),
    ({S.STAGED: 1}, False, False),
    ({S.UPLOADING: 1}, False, True),
    ({S.COPYING: 1}, False, True),
    ({S.DISCOVERED: 1, S.UPLOADED: 1, S.FAILED: 1}, True, False),
])
def test_is_pending(counts, storage, want):
    assert is_pending({str(k): n for k, n in counts.items()}, storage_configured=storage) is want


@pytest.mark.parametrize(("uploaded", "wiping", "refused", "storage", "mode", "want"), [
    ({1}, set(), frozenset(), True, AFTER, True),
    ({1}, set(), frozenset({1}), True, AFTER, False),
    ({1, 2}, set(), frozenset({1}), True, AFTER, True),
    ({1}, set(), frozenset(), True, NEVER, False),
    ({1}, set(), frozenset(), False, AFTER, False),
    (set(), {3}, frozenset(), False, NEVER, True),
    (set(), {3}, frozenset({3}), True, AFTER, False),
])
def test_needs_new_worker(uploaded, wiping, refused, storage, mode, want):
    assert needs_new_worker(uploaded, wiping, refused, storage_configured=storage, wipe_mode=mode) is want
