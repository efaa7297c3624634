"""The clip lifecycle: states, events and the legal transitions. No I/O.

A clip moves::

    discovered -> copying -> staged -> uploading -> uploaded -> wiped
                     |                    |
                     v                    v
                 quarantined            failed  (replayable: -> staged)

The state names are part of the CLI contract (``dockd queue --state``), so
they never change spelling. The only way into ``wiped`` is from ``uploaded``,
and the only way into ``uploaded`` is from ``uploading`` after the storage
adapter proved the bytes arrived. The queue applies every transition through
:func:`next_state` and commits it with its audit event before acting on it.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import IllegalTransition


class ClipState(StrEnum):
    DISCOVERED = "discovered"
    COPYING = "copying"
    STAGED = "staged"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
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
    WIPED = "wiped"  # deleted from the camera after the wipe gate


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
    (S.UPLOADED, E.WIPED): S.WIPED,
}

# States in which the clip still needs work before its camera may be released.
PENDING = frozenset({S.DISCOVERED, S.COPYING, S.STAGED, S.UPLOADING})
# States that need a person (replay, investigation).
NEEDS_ATTENTION = frozenset({S.FAILED, S.QUARANTINED})
# States in which the station holds the only verified copy off the camera.
HELD_LOCALLY = frozenset({S.STAGED, S.UPLOADING, S.FAILED})


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
    """The lifecycle half of the wipe gate: only ``uploaded`` clips, only with storage, only if allowed.

    The other half (the source still has the recorded size, mtime and hash) needs
    I/O and lives in :mod:`dockd.wipe`.
    """
    return storage_configured and wipe_mode == "after-upload" and ClipState(state) is S.UPLOADED


class CameraState(StrEnum):
    DOCKED = "docked"  # seen, not yet mounted/scanned
    OFFLOADING = "offloading"  # copying clips to staging
    UPLOADING = "uploading"  # all clips staged; waiting for central storage
    WIPING = "wiping"
    READY = "ready"  # every clip wiped (or nothing to do): free to take
    HOLDING = "holding"  # offloaded, but wiping is off (wipe = never or no storage)
    ATTENTION = "attention"  # some clip failed or was quarantined; camera keeps it
    ERROR = "error"  # mount or scan failed; nothing is wiped
    UNDOCKED = "undocked"


def camera_state(counts: dict[str, int], *, offloading_done: bool, storage_configured: bool, wipe_mode: str) -> CameraState:
    """Derive a docked camera's state from the states of its clips still on it.

    ``counts`` maps clip states to the number of this camera's clips (from its
    current dock) in each. Pure policy: the daemon calls it after each step.
    """
    if not offloading_done:
        return CameraState.OFFLOADING
    if any(counts.get(s, 0) for s in NEEDS_ATTENTION):
        return CameraState.ATTENTION
    wiping = storage_configured and wipe_mode == "after-upload"
    if not wiping:
        if any(counts.get(s, 0) for s in (S.DISCOVERED, S.COPYING)):
            return CameraState.OFFLOADING
        return CameraState.HOLDING
    if any(counts.get(s, 0) for s in (S.DISCOVERED, S.COPYING, S.STAGED, S.UPLOADING)):
        return CameraState.UPLOADING
    if counts.get(S.UPLOADED, 0):
        return CameraState.WIPING
    return CameraState.READY
