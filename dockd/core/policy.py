"""The daemon's camera policy: what a docked camera's worker does next. No I/O.

Once a camera's clips are offloaded, its worker loops: it reads the camera's
clip counts from the queue, asks :func:`camera_verdict` what to do, and acts
(wipe pass, state write, wait, release). Everything it decides on is an
argument here, including the time since its last wipe pass (measured by the
daemon's injected clock), so the rules are tested as a table without threads,
files or a queue.

The wipe mode (``[offload] wipe`` with ``[storage]`` configured) is the
lifecycle's rule (:func:`dockd.core.lifecycle.may_wipe`); the state a camera
shows is :func:`dockd.core.lifecycle.camera_state`'s, with one override: a
camera whose offload pass aborted copies is never ``ready`` or ``holding``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum

from dockd.core.lifecycle import CameraState, ClipState, camera_state, may_wipe

# Wipe uploaded clips at least this often while others are still pending, and retry a
# refused wipe pass no more often than this: never spin on the wipe gate.
WIPE_BATCH_S = 30.0
# With the source verified ahead (wipe_check = "hash"), wipe the proven clips while uploads still
# run, in passes at most this often: a pass is cheap (an lstat, two commits, an unlink, a directory
# fsync per clip), but each may remount the camera read-write and back.
WIPE_EARLY_S = 2.0

# States that keep a camera's worker waiting (more clips will move on their own).
_IN_FLIGHT = (ClipState.COPYING, ClipState.STAGED, ClipState.UPLOADING)
# States a camera's worker may end in.
_FINAL = (CameraState.READY, CameraState.HOLDING, CameraState.ATTENTION)


def wipe_enabled(*, storage_configured: bool, wipe_mode: str) -> bool:
    """True if uploaded clips are wiped from cameras (lifecycle's rule for an ``uploaded`` clip)."""
    return may_wipe(ClipState.UPLOADED, storage_configured=storage_configured, wipe_mode=wipe_mode)


def pending_states(*, storage_configured: bool) -> tuple[ClipState, ...]:
    """Clip states still moving on their own; without storage ``staged`` is final (nothing uploads it)."""
    return _IN_FLIGHT if storage_configured else tuple(s for s in _IN_FLIGHT if s is not ClipState.STAGED)


def is_pending(counts: Mapping[str, int], *, storage_configured: bool) -> bool:
    """True if some clip counted in ``counts`` is still moving on its own (see :func:`pending_states`)."""
    return any(counts.get(s) for s in pending_states(storage_configured=storage_configured))


class Step(StrEnum):
    WIPE = "wipe"  # run a wipe pass now, then decide again (see after_wipe)
    VERIFY = "verify"  # re-read the next unverified clip's source on the camera, then decide again
    WAIT = "wait"  # show ``state`` (with ``reason``), wait for a change, decide again
    FINISH = "finish"  # release the camera (unmount), show ``state`` with ``reason``, stop the worker


@dataclass(frozen=True)
class Verdict:
    step: Step
    state: CameraState | None = None  # WAIT, FINISH: the camera state to show
    reason: str | None = None
    pending: bool = False  # WIPE, WAIT: clips were still pending (copying, uploading) when it was decided
    only_proven: bool = False  # WIPE: pass only the clips whose source was verified ahead (shift_verdict)


def camera_verdict(counts: Mapping[str, int], *, serial: str, aborted: int, refused: bool,
                   since_wipe: float, storage_configured: bool, wipe_mode: str) -> Verdict:
    """What a camera's worker does next, after the offload pass.

    ``counts``: the camera's clips (of its current dock) by state; ``aborted``:
    copies the offload pass aborted (those clips stay ``discovered`` and only a
    new dock copies them, so ``discovered`` never holds the camera open);
    ``refused``: the last wipe pass kept clips back; ``since_wipe``: seconds
    since the last wipe pass (or since the worker started looking).

    Uploaded clips (with wiping on) or ``wiping`` ones are wiped at once when
    nothing else is pending and the last pass refused nothing, else every
    :data:`WIPE_BATCH_S`. Otherwise the camera shows
    :func:`~dockd.core.lifecycle.camera_state`, overridden to ``attention``
    after aborted copies, and the worker finishes once a final state is
    reached with nothing pending.
    """
    counts = {k: v for k, v in counts.items() if k != ClipState.DISCOVERED}
    pending = is_pending(counts, storage_configured=storage_configured)
    wipeable = bool(counts.get(ClipState.UPLOADED)) and wipe_enabled(storage_configured=storage_configured,
                                                                     wipe_mode=wipe_mode)
    if (wipeable or counts.get(ClipState.WIPING)) and ((not pending and not refused) or since_wipe > WIPE_BATCH_S):
        return Verdict(Step.WIPE, pending=pending)
    state = camera_state(counts, offloading_done=True, storage_configured=storage_configured, wipe_mode=wipe_mode)
    reason = None
    if state is CameraState.ATTENTION:
        reason = (f"{counts.get(ClipState.FAILED, 0)} failed, {counts.get(ClipState.QUARANTINED, 0)} "
                  f"quarantined clip(s) stay on the camera; see `dockd queue --camera {serial}`")
    elif state is CameraState.HOLDING:
        reason = "wiping is off (no [storage] or wipe = \"never\"); clips stay on the camera"
    if aborted and state in (CameraState.READY, CameraState.HOLDING):
        state = CameraState.ATTENTION
        reason = (f"{aborted} clip(s) could not be copied and stay on the camera; dock it again "
                  f"to retry (see `dockd queue --camera {serial} --state discovered`)")
    if state in _FINAL and not pending:
        return Verdict(Step.FINISH, state, reason)
    return Verdict(Step.WAIT, state, reason, pending=pending)


def after_wipe(wipe: Verdict, refusals: list[str]) -> Verdict | None:
    """The verdict after the wipe pass ``wipe`` decided: ``refusals`` are the gate's reasons, one per clip kept.

    A refusal with nothing pending needs a person, not a retry loop: finish
    ``attention`` (the clips stay on the camera, uploaded). Otherwise None:
    decide again with :func:`camera_verdict`.
    """
    if refusals and not wipe.pending:
        return Verdict(Step.FINISH, CameraState.ATTENTION,
                       f"{len(refusals)} uploaded clip(s) were not wiped and stay on the camera: {refusals[0]}")
    return None


def needs_new_worker(uploaded: Collection[int], wiping: Collection[int], refused: Collection[int], *,
                     storage_configured: bool, wipe_mode: str) -> bool:
    """True if a docked camera whose worker finished needs a new one: clips to wipe that the last
    worker's wipe gate did not keep back (``refused``), e.g. a replayed clip now uploaded."""
    new_uploaded = any(c not in refused for c in uploaded)
    return (new_uploaded and wipe_enabled(storage_configured=storage_configured, wipe_mode=wipe_mode)) \
        or any(c not in refused for c in wiping)


def shift_verdict(base: Verdict, *, to_verify: int, proven: int, refused: bool, since_wipe: float) -> Verdict:
    """Keep the camera busy while uploads run (``wipe_check = "hash"`` with wiping on).

    ``base`` is :func:`camera_verdict`'s decision; ``to_verify``: the camera's clips, staged to
    uploaded, whose source has not been re-read yet; ``proven``: its ``uploaded`` clips whose
    source was re-read and matched; ``refused`` and ``since_wipe`` as for :func:`camera_verdict`.

    Proven clips are wiped every :data:`WIPE_EARLY_S` (every :data:`WIPE_BATCH_S` after a pass
    that refused some), whatever else is pending: the gate then needs only an identity check,
    not a read. Between those passes the camera re-reads the next unverified clip (the camera is
    otherwise idle while the uplink works). With nothing left to verify, ``base`` decides: its
    wipe pass takes every uploaded clip (the gate re-reads any whose proof went stale).
    """
    if proven and ((since_wipe >= WIPE_EARLY_S and not refused) or since_wipe > WIPE_BATCH_S):
        # pending as the base saw it: with uploads still running a refusal here waits for more; with
        # nothing else pending it finishes the camera `attention` (after_wipe), never a retry loop
        return Verdict(Step.WIPE, pending=base.pending, only_proven=True)
    if to_verify:
        return Verdict(Step.VERIFY, base.state, base.reason)
    return base
