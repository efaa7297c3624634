"""The clip lifecycle: states, events and the legal transitions. No I/O.

A clip moves::

    discovered -> copying -> staged -> uploading -> uploaded -> wiping -> wiped
                     |                     |           ^          | ^       |
                     v                     v           '----------' '-------'
                quarantined             failed         (wipe_aborted) (wipe_redo)
                                  (replayable: -> staged)

The state names are part of the CLI contract (``dockd queue --state``), so
they never change spelling. A wipe is an intent and a confirmation: the only
way into ``wiping`` is from ``uploaded`` (or from ``wiped`` when a later dock
finds the file still on the camera), committed before anything is deleted;
the only way into ``wiped`` is from ``wiping``, committed with the receipt
only after the deletion (and the fsync of the camera directory). The only way
into ``uploaded`` is from ``uploading`` after the storage adapter proved the
bytes arrived, or back from ``wiping`` when the deletion failed or the gate
refused on a re-check. The queue applies every transition through
:func:`next_state` and commits it with its audit event before acting on it.
"""

from __future__ import annotations

from enum import StrEnum

from dockd.core.errors import IllegalTransition


class ClipState(StrEnum):
    DISCOVERED = "discovered"
    COPYING = "copying"
    STAGED = "staged"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    WIPING = "wiping"
    WIPED = "wiped"
    FAILED = "failed"
    QUARANTINED = "quarantined"


class ClipEvent(StrEnum):
    COPY_STARTED = "copy_started"  # offloader claims the clip
    COPY_ABORTED = "copy_aborted"  # undock, I/O error, crash recovery: copy again later
    STAGED = "staged"  # copy fsynced, renamed, re-read hash matched
    UPLOAD_STARTED = "upload_started"  # uploader holds a lease
    UPLOAD_RETRY = "upload_retry"  # transient failure or lease expiry: back to the queue
    UPLOADED = "uploaded"  # storage proved it holds exactly the bytes
    UPLOAD_FAILED = "upload_failed"  # attempts exhausted or permanent error
    REPLAY = "replay"  # a technician puts a failed clip back
    QUARANTINE = "quarantine"  # rejected input or conflicting evidence
    WIPE_STARTED = "wipe_started"  # the gate passed: the intent to delete, committed before any unlink
    WIPED = "wiped"  # deleted from the camera (unlinked, directory fsynced): the receipt
    WIPE_ABORTED = "wipe_aborted"  # deletion failed, or the gate refused on a re-check: still on the camera
    WIPE_REDO = "wipe_redo"  # a dock found a clip recorded as wiped still on the camera


S = ClipState
E = ClipEvent

TRANSITIONS: dict[tuple[ClipState, ClipEvent], ClipState] = {
    (S.DISCOVERED, E.COPY_STARTED): S.COPYING,
    (S.DISCOVERED, E.QUARANTINE): S.QUARANTINED,
    (S.COPYING, E.COPY_ABORTED): S.DISCOVERED,
    (S.COPYING, E.STAGED): S.STAGED,
    (S.COPYING, E.QUARANTINE): S.QUARANTINED,
    (S.STAGED, E.UPLOAD_STARTED): S.UPLOADING,
    (S.STAGED, E.QUARANTINE): S.QUARANTINED,
    (S.STAGED, E.UPLOAD_FAILED): S.FAILED,
    (S.UPLOADING, E.UPLOAD_RETRY): S.STAGED,
    (S.UPLOADING, E.UPLOADED): S.UPLOADED,
    (S.UPLOADING, E.UPLOAD_FAILED): S.FAILED,
    (S.UPLOADING, E.QUARANTINE): S.QUARANTINED,
    (S.FAILED, E.REPLAY): S.STAGED,
    (S.UPLOADED, E.WIPE_STARTED): S.WIPING,
    (S.WIPING, E.WIPED): S.WIPED,
    (S.WIPING, E.WIPE_ABORTED): S.UPLOADED,
    (S.WIPED, E.WIPE_REDO): S.WIPING,
}

# Named state sets: every module that asks "which clips are ..." uses one of these, never a list of its own.

# Not yet copied off the camera (no verified staged copy yet).
NOT_YET_COPIED = frozenset({S.DISCOVERED, S.COPYING})
# States in which the clip still needs work before its camera may be released.
PENDING = frozenset({S.DISCOVERED, S.COPYING, S.STAGED, S.UPLOADING})
# States that need a person (replay, investigation).
NEEDS_ATTENTION = frozenset({S.FAILED, S.QUARANTINED})
# States in which the station holds the only verified copy off the camera (its staged copy must exist).
HELD_LOCALLY = frozenset({S.STAGED, S.UPLOADING, S.FAILED})
# Not yet uploaded: the clips ``oldest clip not yet uploaded`` looks at. A ``failed`` clip is not
# uploaded (it waits for ``dockd replay``), so it counts; a ``quarantined`` one is rejected, not waiting.
NOT_YET_UPLOADED = PENDING | {S.FAILED}
# Central storage proved it holds the clip's bytes.
IN_STORAGE = frozenset({S.UPLOADED, S.WIPING, S.WIPED})
# A verified copy was made and its hash recorded (staged, or later); quarantined clips are not counted.
STAGED_OR_LATER = HELD_LOCALLY | IN_STORAGE
# Still on its camera: every state but ``wiped`` (a new state counts as on the camera).
ON_CAMERA = frozenset(S) - {S.WIPED}


def ordered(states: frozenset[ClipState]) -> list[ClipState]:
    """``states`` in lifecycle order (a stable list for queries and output)."""
    return [s for s in ClipState if s in states]


def next_state(clip_id: object, state: ClipState | str, event: ClipEvent | str) -> ClipState:
    """Return the state ``event`` moves a clip in ``state`` to; raise IllegalTransition otherwise."""
    try:
        key = (ClipState(state), ClipEvent(event))
    except ValueError:
        raise IllegalTransition(clip_id, state, event) from None
    try:
        return TRANSITIONS[key]
    except KeyError:
        raise IllegalTransition(clip_id, state, event) from None


def may_wipe(state: ClipState | str, *, storage_configured: bool, wipe_mode: str) -> bool:
    """The lifecycle half of the wipe gate: only with storage, only if allowed, only ``uploaded`` clips
    (a new wipe) or ``wiping`` ones (an interrupted wipe whose file is still there, gated again).

    The other half (the source still has the recorded size, mtime and hash) needs
    I/O and lives in :mod:`dockd.station.wipe`.
    """
    return storage_configured and wipe_mode == "after-upload" and ClipState(state) in (S.UPLOADED, S.WIPING)


class CameraState(StrEnum):
    DOCKED = "docked"  # seen, not yet mounted/scanned
    OFFLOADING = "offloading"  # copying clips to staging
    UPLOADING = "uploading"  # all clips staged; waiting for central storage
    WIPING = "wiping"  # uploaded clips being deleted, or a wipe not yet confirmed
    READY = "ready"  # every clip wiped (or nothing to do): free to take
    HOLDING = "holding"  # offloaded, but wiping is off (wipe = never or no storage)
    ATTENTION = "attention"  # some clip failed or was quarantined; camera keeps it
    ERROR = "error"  # mount or scan failed; nothing is wiped
    UNDOCKED = "undocked"


def camera_state(
    counts: dict[str, int], *, offloading_done: bool, storage_configured: bool, wipe_mode: str
) -> CameraState:
    """Derive a docked camera's state from the states of its clips still on it.

    ``counts`` maps clip states to the number of this camera's clips (from its
    current dock) in each. Pure policy: the daemon calls it after each step.
    """
    if not offloading_done:
        return CameraState.OFFLOADING
    if any(counts.get(s, 0) for s in NEEDS_ATTENTION):
        return CameraState.ATTENTION
    if counts.get(S.WIPING, 0):
        # A wipe whose deletion is not confirmed (whatever the policy now): the file may still be there.
        return CameraState.WIPING
    wiping = storage_configured and wipe_mode == "after-upload"
    if not wiping:
        if any(counts.get(s, 0) for s in NOT_YET_COPIED):
            return CameraState.OFFLOADING
        return CameraState.HOLDING
    if any(counts.get(s, 0) for s in PENDING):
        return CameraState.UPLOADING
    if counts.get(S.UPLOADED, 0):
        return CameraState.WIPING
    return CameraState.READY
