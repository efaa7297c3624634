"""The pure rules of verifying a source ahead of its wipe: :func:`judge` and :func:`shift_verdict`, as tables."""

from __future__ import annotations

import pytest

from dockd.core.lifecycle import CameraState as C
from dockd.core.policy import WIPE_BATCH_S, WIPE_EARLY_S, Step, Verdict, after_wipe, shift_verdict
from dockd.core.sourceproof import Identity, Proof, judge
from dockd.core.sourceproof import Verdict as V

SHA, OTHER = "a" * 64, "b" * 64
ID = Identity(size=100, mtime_ns=5_000, ctime_ns=6_000, dev=1, ino=42)


def _with(**kw) -> Identity:
    return Identity(**{**ID.__dict__, **kw})


@pytest.mark.parametrize(("name", "proof", "now", "want"), [
    ("matched-unchanged", Proof(ID, SHA, 1.0), ID, V.PROVEN),
    ("no-proof", None, ID, V.REREAD),
    ("mismatched-unchanged", Proof(ID, OTHER, 1.0), ID, V.MISMATCH),
    ("grown-since", Proof(ID, SHA, 1.0), _with(size=101), V.REREAD),
    ("mtime-changed-since", Proof(ID, SHA, 1.0), _with(mtime_ns=5_001), V.REREAD),
    # written with size and mtime put back: only ctime tells
    ("ctime-changed-since", Proof(ID, SHA, 1.0), _with(ctime_ns=6_001), V.REREAD),
    ("replaced-other-inode", Proof(ID, SHA, 1.0), _with(ino=43), V.REREAD),
    ("other-device-or-mount", Proof(ID, SHA, 1.0), _with(dev=2), V.REREAD),
    # a mismatch is only trusted for the very file it read
    ("mismatched-then-changed", Proof(ID, OTHER, 1.0), _with(ctime_ns=7_000), V.REREAD),
    # proof and file agree, but the file is not the offloaded one (size/mtime): the re-read refuses it
    ("proof-of-another-file", Proof(_with(size=7), SHA, 1.0), _with(size=7), V.REREAD),
    # taken before the current dock (since = 0.5 here): the camera was out of our hands meanwhile
    ("from-an-earlier-dock", Proof(ID, SHA, 0.4), ID, V.REREAD),
    ("mismatch-from-an-earlier-dock", Proof(ID, OTHER, 0.4), ID, V.REREAD),
    ("taken-at-the-dock", Proof(ID, SHA, 0.5), ID, V.PROVEN),
])
def test_judge(name, proof, now, want):
    assert judge(proof, now, size=100, mtime_ns=5_000, sha256=SHA, since=0.5) is want, name


WAIT = Verdict(Step.WAIT, C.UPLOADING, pending=True)  # uploads still running
IDLE = Verdict(Step.WAIT, C.WIPING, pending=False)  # all uploaded, the last pass refused: nothing else to come
WIPE_ALL = Verdict(Step.WIPE, pending=False)
FINISH = Verdict(Step.FINISH, C.READY)
EARLY = (Step.WIPE, None, True)


@pytest.mark.parametrize(("name", "base", "to_verify", "proven", "refused", "since", "want"), [
    # proven clips are wiped while uploads run, every WIPE_EARLY_S
    ("proven-due", WAIT, 3, 1, False, WIPE_EARLY_S, EARLY),
    ("proven-not-yet-due-verifies", WAIT, 3, 1, False, WIPE_EARLY_S - 0.5, (Step.VERIFY, C.UPLOADING, False)),
    ("proven-not-yet-due-nothing-to-verify", WAIT, 0, 1, False, 0.5, (Step.WAIT, C.UPLOADING, False)),
    # after a pass that refused some: no spinning on the gate, every WIPE_BATCH_S only
    ("refused-waits-for-batch", WAIT, 0, 1, True, WIPE_EARLY_S + 1, (Step.WAIT, C.UPLOADING, False)),
    ("refused-batch-due", WAIT, 0, 1, True, WIPE_BATCH_S + 1, EARLY),
    ("refused-verifies-meanwhile", WAIT, 2, 1, True, WIPE_EARLY_S + 1, (Step.VERIFY, C.UPLOADING, False)),
    ("refused-nothing-else-pending", IDLE, 0, 3, True, WIPE_BATCH_S + 1, EARLY),
    # the camera is idle while uploads run: verify
    ("nothing-proven-verifies", WAIT, 1, 0, False, 100.0, (Step.VERIFY, C.UPLOADING, False)),
    ("verify-before-base-wipe", WIPE_ALL, 1, 0, False, 0.0, (Step.VERIFY, None, False)),
    # nothing left to verify: the base decides (its pass takes every uploaded clip)
    ("base-wipe", WIPE_ALL, 0, 0, False, 0.0, (Step.WIPE, None, False)),
    ("base-finish", FINISH, 0, 0, False, 0.0, (Step.FINISH, C.READY, False)),
    ("base-wait", WAIT, 0, 0, False, 0.0, (Step.WAIT, C.UPLOADING, False)),
])
def test_shift_verdict(name, base, to_verify, proven, refused, since, want):
    v = shift_verdict(base, to_verify=to_verify, proven=proven, refused=refused, since_wipe=since)
    assert (v.step, v.state, v.only_proven) == want, name
    if v.step is Step.WIPE and v.only_proven:
        # a refusal in an early pass finishes the camera only if nothing else is pending
        assert v.pending is base.pending
        after = after_wipe(v, ["source changed"])
        assert (after is None) is base.pending, name
        if after is not None:
            assert (after.step, after.state) == (Step.FINISH, C.ATTENTION)
