"""The wipe gate: the only code that deletes anything from a camera.

A wipe is an intent and a confirmation. A clip is deleted only when all of
these hold, checked in this order:

1. its queue state is ``uploaded`` and policy allows wiping
   (:func:`dockd.core.lifecycle.may_wipe`: storage configured, ``wipe = "after-upload"``);
2. with Object Lock configured, the bucket enforces it;
3. the file on the camera still has the recorded size and mtime, and (unless
   ``wipe_check = "stat"``) its bytes were re-read and hashed to the recorded
   SHA-256: either earlier in this dock, while uploads ran (:func:`verify_sources`,
   a proof committed to the queue that the gate accepts only if the file's
   identity, size, mtime, ctime, device and inode, is exactly what it was when
   read: :func:`dockd.core.sourceproof.judge`), or, without such a proof, right
   here, as the gate always did;
4. the intent, ``wipe_started`` (``uploaded -> wiping``, naming the clip and
   its sidecars), is committed to the queue.

Only then are its sidecars and the clip unlinked, the camera directory
fsynced (a filesystem that cannot fsync a directory, EINVAL/ENOTSUP, is
tolerated and the receipt says so), each sidecar marked wiped, and the
confirmation, ``wiped`` (``wiping -> wiped``) with its receipt (clip, object
key, checksum, how it was confirmed), committed. A kill at any point leaves
the clip ``wiping`` (its camera is then ``wiping``, never ``ready``) until
the next pass over its camera settles it (:func:`wipe_clips` takes
``wiping`` clips too): a file found gone is confirmed ``wiped`` (receipt:
confirmed after an interruption); one still there passes the gate again
(policy, Object Lock, size/mtime/hash) and is deleted, or goes back to
``uploaded`` (``wipe_aborted``) with the reason. An unlink that fails also
goes back to ``uploaded``; a directory fsync that fails for real (EIO) keeps
the clip ``wiping``: deleted, but not yet proven durable.

A clip recorded ``wiped`` whose file (same path, size and mtime) a dock's
scan finds still on the camera is reopened (``wipe_redo``, back to
``wiping``, see :func:`reopen_wiped`) and settled the same way: never
silently counted as done.

A clip that fails a check stays on the camera and the refusal is a
``wipe.refused`` audit event (recorded once per reason, not on every pass of
the daemon); Object Lock not being enforced also raises the ``object-lock``
alarm.
"""

from __future__ import annotations

import math
import os
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from dockd.camera.volume import Entry, SourceChanged, Volume, escape
from dockd.config import Config
from dockd.core import naming
from dockd.core.errors import IllegalTransition
from dockd.core.lifecycle import ClipEvent, ClipState, may_wipe
from dockd.core.sourceproof import Identity, Proof, Verdict, judge
from dockd.core.timefmt import rfc3339
from dockd.evidence.copier import hash_fd
from dockd.queue import sourcechecks
from dockd.queue.records import Clip
from dockd.queue.store import Queue

log = structlog.get_logger("dockd.wipe")

# The points between the steps of one wipe, in order; ``wipe_clips(hook=...)`` is called at each with
# (point, clip id). Tests use it to crash a wipe there; the daemon passes none.
STEPS = ("intent", "sidecar_unlinked", "clip_unlinked", "dir_fsynced", "confirmed")

LOCK_REASON = "Object Lock is configured but the bucket does not enforce it"
OFF_REASON = "wiping is off (no [storage] or wipe = \"never\")"


@dataclass
class WipeResult:
    wiped: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    returned: list[int] = field(default_factory=list)  # interrupted wipes put back to uploaded: wiping is off now


def identity(st: os.stat_result) -> Identity:
    return Identity(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino)


def _mismatch(path: str, got: str, sha256: str) -> SourceChanged:
    return SourceChanged(f"{escape(path)}: content on camera hashes to {got}, not {sha256}")


def _reread(vol: Volume, path: str, size: int, mtime_ns: int,
            cancel: threading.Event | None = None) -> tuple[Identity, str]:
    """Read ``path`` on the camera in full (O_DIRECT where allowed: the device's bytes) and hash it:
    (its identity before and after the read, the SHA-256). Raises SourceChanged if the file is not
    the offloaded one (size, mtime) or changed while being read, Cancelled once ``cancel`` is set."""
    st = vol.lstat(path)
    e = Entry(path, size, mtime_ns, st.st_dev, st.st_ino)
    Volume.check_same(e, st, same_inode=False)
    fd = vol.open(e)  # the file lstat saw (same inode), still a regular file
    try:
        before = identity(os.fstat(fd))
        got, n = hash_fd(fd, cancel=cancel)
        after = identity(os.fstat(fd))
    finally:
        os.close(fd)
    if before != after or n != size:
        raise SourceChanged(f"{escape(path)}: changed while being read")
    return before, got


def _check_source(vol: Volume, path: str, size: int, mtime_ns: int, sha256: str, by_hash: bool,
                  proofs: dict[str, Proof], since: float, verified: dict[str, float]) -> Entry:
    """Raise SourceChanged unless the camera file still is what was offloaded.

    By hash: a recorded proof in ``proofs``, taken since ``since`` (the camera's dock), that still
    speaks for the file (:func:`judge`) is
    enough; without one the file is re-read now, as the gate always did (relied on at once, so
    not recorded: the intent and the receipt say ``checked: sha256``). ``verified`` gets
    the time of a read done ahead that was relied on, by path (for the receipt)."""
    st = vol.lstat(path)
    e = Entry(path, size, mtime_ns, st.st_dev, st.st_ino)
    Volume.check_same(e, st, same_inode=False)
    if by_hash:
        proof = proofs.get(path)
        v = judge(proof, identity(st), size=size, mtime_ns=mtime_ns, sha256=sha256, since=since)
        if v is Verdict.REREAD:
            _, got = _reread(vol, path, size, mtime_ns)
            if got != sha256:
                raise _mismatch(path, got, sha256)
            return e
        assert proof is not None
        if v is Verdict.MISMATCH:
            raise _mismatch(path, proof.sha256, sha256)
        verified[path] = proof.verified_at  # relied on a read done ahead: the receipt says when
    return e


def verify_sources(queue: Queue, vol: Volume, clip: Clip, cancel: threading.Event | None = None, *,
                   clock: Callable[[], float] = time.time) -> str | None:
    """Re-read a clip's file and its sidecars on the camera ahead of the wipe, while uploads run.

    Each file read is recorded (:func:`sourcechecks.record`, audit ``source.verified``),
    matched or not; the wipe gate later relies on a matched one only while the file's identity
    is unchanged, and refuses on a mismatched one as its own re-read would. Returns None if
    every file matched, else the reason (a file that could not be read is not recorded: the
    gate reads it itself). Never raises for a file; raises Cancelled once ``cancel`` is set (an
    undock or the daemon stopping: a long clip's read is not waited for)."""
    try:
        files = [(clip.path, clip.size, clip.mtime_ns, clip.sha256 or "")]
        files += [(sc["path"], sc["size"], sc["mtime_ns"], sc["sha256"]) for sc in queue.sidecars(clip.id)
                  if sc["wiped_at"] is None]
        for path, size, mtime_ns, sha256 in files:
            ident, got = _reread(vol, path, size, mtime_ns, cancel)
            # committed before it is relied on; stamped after the read, by the clock that stamps docks
            sourcechecks.record(queue, clip, path, ident, got, expected=sha256, now=clock())
            if got != sha256:
                return str(_mismatch(path, got, sha256))
    except (SourceChanged, OSError) as e:
        return _why(e)
    return None


def _why(e: BaseException) -> str:
    return str(e) if isinstance(e, SourceChanged) else f"cannot check source: {getattr(e, 'strerror', None) or e}"


def _refuse(queue: Queue, clip: Clip, reason: str, res: WipeResult, blog, now: float) -> None:
    """Keep the clip on the camera; say why once (not on every pass of the daemon)."""
    res.refused.append((clip.id, reason))
    msg = f"wipe refused: {reason}"
    if clip.last_error == msg:
        return
    queue.record("wipe.refused", camera=clip.camera, clip=clip.id, detail={"reason": reason}, now=now)
    queue.update_clip(clip.id, last_error=msg)
    blog.warning("wipe refused", reason=reason)


def reopen_wiped(queue: Queue, clip_ids: list[int], *, clock: Callable[[], float] = time.time) -> list[int]:
    """Clips recorded ``wiped`` whose file a dock's scan found still on the camera (same path, size,
    mtime): commit ``wipe_redo`` (back to ``wiping``) for each, so the next :func:`wipe_clips` pass
    gates and deletes them again and their camera is not ``ready`` meanwhile. Returns the ids reopened."""
    done = []
    for cid in clip_ids:
        try:
            c = queue.transition(cid, ClipEvent.WIPE_REDO, expect=ClipState.WIPED, now=clock(),
                                 last_error="recorded as wiped but still on the camera; wiping again",
                                 detail={"reason": "still on the camera (same path, size and mtime) after its "
                                                   "recorded wipe"})
        except IllegalTransition:
            continue
        log.warning("clip recorded as wiped is still on the camera; wiping it again", clip=cid, camera=c.camera,
                    path=c.path)
        done.append(cid)
    return done


def interrupted_wipes(queue: Queue, *, clock: Callable[[], float] = time.time) -> list[int]:
    """At start-up: the clips left ``wiping`` by a crash, recorded once (``recovery.wipes``).

    They stay ``wiping`` (their camera is never ``ready``) until their camera's next wipe pass,
    which for a camera still docked runs right after start: only that pass can look at the volume."""
    ids = [c.id for c in queue.clips(state=ClipState.WIPING)]
    if ids:
        queue.record("recovery.wipes", detail={"wiping": ids, "settled": "at the next pass over each camera"},
                     now=clock())
    return ids


def wipe_clips(cfg: Config, queue: Queue, vol: Volume, clips: list[Clip], *, lock_ok: Callable[[], bool],
               clock: Callable[[], float] = time.time,
               hook: Callable[[str, int], None] | None = None) -> WipeResult:
    """Pass each ``uploaded`` clip through the gate and delete those that pass; settle each ``wiping``
    one (an interrupted or reopened wipe). Other states are left alone. Never raises for one clip
    (``hook``, for tests, may raise at a step: that is a crash there)."""
    res = WipeResult()
    by_hash = cfg.offload.wipe_check == "hash"
    allowed = may_wipe(ClipState.UPLOADED, storage_configured=cfg.storage is not None, wipe_mode=cfg.offload.wipe)
    need_lock = bool(cfg.storage and (cfg.storage.object_lock_days or cfg.storage.legal_hold))
    lock_verdict: list[bool] = []  # asked once per batch, and only if a clip gets that far
    docks: dict[str, float] = {}  # camera -> its dock's time: proofs older than that are not relied on

    def since(camera: str) -> float:
        if camera not in docks:
            docks[camera] = _dock_time(queue, camera)
        return docks[camera]
    step = hook or (lambda point, clip_id: None)

    def locked() -> bool:
        if not lock_verdict:
            try:
                lock_verdict.append(bool(lock_ok()))
            except Exception as e:  # noqa: BLE001 - cannot tell: do not wipe
                log.warning("cannot tell whether the bucket enforces Object Lock", error=str(e))
                lock_verdict.append(False)
        return lock_verdict[0]

    def gate_refusal() -> str | None:
        """The policy and Object Lock halves of the gate, for a clip about to be deleted."""
        if not allowed:
            return OFF_REASON
        if need_lock and not locked():
            queue.raise_alarm("object-lock", LOCK_REASON, now=clock())
            return LOCK_REASON
        return None

    for clip in clips:
        blog = log.bind(clip=clip.id, camera=clip.camera)
        if clip.state is ClipState.WIPING:
            _settle(queue, vol, clip, None, by_hash, gate_refusal, res, blog, clock, step, since=since(clip.camera))
            continue
        if not may_wipe(clip.state, storage_configured=cfg.storage is not None, wipe_mode=cfg.offload.wipe):
            continue
        reason = gate_refusal()
        if reason:
            _refuse(queue, clip, reason, res, blog, clock())
            continue
        verified: dict[str, float] = {}
        try:
            gated = _gate_files(queue, vol, clip, by_hash, since(clip.camera), verified)
        except (SourceChanged, OSError) as e:
            _refuse(queue, clip, _why(e), res, blog, clock())
            continue
        try:
            clip = queue.transition(clip.id, ClipEvent.WIPE_STARTED, expect=ClipState.UPLOADED, now=clock(),
                                    detail={"intent": {"path": clip.path, "sidecars": sorted(set(gated) - {clip.path}),
                                                       "checked": "sha256" if by_hash else "stat"}})
        except IllegalTransition:
            continue
        step("intent", clip.id)
        _settle(queue, vol, clip, gated, by_hash, gate_refusal, res, blog, clock, step, verified)
    return res


def _dock_time(queue: Queue, camera: str) -> float:
    """When ``camera`` was docked (its current dock); infinity if unknown: then no proof is relied on."""
    cam = queue.camera(camera)
    return cam.docked_at if cam is not None and cam.docked_at is not None else math.inf


def _gate_files(queue: Queue, vol: Volume, clip: Clip, by_hash: bool, since: float,
                verified: dict[str, float]) -> dict[str, Entry]:
    """The source half of the gate for a new wipe: the clip, then each sidecar not yet wiped.
    Raises SourceChanged or OSError for the first that fails."""
    proofs = sourcechecks.proofs(queue, clip.id) if by_hash else {}
    gated = {clip.path: _check_source(vol, clip.path, clip.size, clip.mtime_ns, clip.sha256 or "", by_hash, proofs,
                                      since, verified)}
    for sc in queue.sidecars(clip.id):
        if sc["wiped_at"] is None:
            gated[sc["path"]] = _check_source(vol, sc["path"], sc["size"], sc["mtime_ns"], sc["sha256"], by_hash,
                                              proofs, since, verified)
    return gated


def _regate(queue: Queue, vol: Volume, clip: Clip, sides: list[dict], paths: list[str],
            there: dict[str, bool | None], gated: dict[str, Entry], by_hash: bool,
            gate_refusal: Callable[[], str | None], res: WipeResult, blog, clock: Callable[[], float],
            verified: dict[str, float], since: float) -> bool:
    """An interrupted or reopened wipe: every file still there passes the whole gate again first.

    Fills ``gated`` with the entries that passed; a sidecar that fails while its clip is gone is
    marked kept (``there[p] = None``, named in the receipt). Returns False if the clip itself failed
    the gate and went back to ``uploaded`` (nothing more to do), else True."""
    if not any(there.values()):
        return True
    reason = gate_refusal()
    if reason is None:
        try:
            proofs = sourcechecks.proofs(queue, clip.id) if by_hash else {}
            for sc in sides:
                if there[sc["path"]]:
                    gated[sc["path"]] = _check_source(vol, sc["path"], sc["size"], sc["mtime_ns"], sc["sha256"],
                                                      by_hash, proofs, since, verified)
            if there[clip.path]:
                gated[clip.path] = _check_source(vol, clip.path, clip.size, clip.mtime_ns, clip.sha256 or "",
                                                 by_hash, proofs, since, verified)
        except (SourceChanged, OSError) as e:
            reason = _why(e)
    if reason is not None:
        gone = [p for p in paths if there[p] is False]
        if there[clip.path]:
            _back(queue, clip, reason, gone, res, blog, clock, vol=vol)
            return False
        # The clip is gone; a sidecar that fails the gate stays on the camera, named in the receipt.
        blog.warning("sidecar kept on the camera", reason=reason)
        for p in paths:
            if there[p] and p not in gated:
                there[p] = None  # kept
    return True


def _unlink_gated(vol: Volume, clip: Clip, sides: list[dict], there: dict[str, bool | None],
                  gated: dict[str, Entry], deleted: list[str], step: Callable[[str, int], None]) -> None:
    """Unlink the gated sidecars, then the clip (no fsync yet), appending each path to ``deleted`` as it
    goes, so that a caller catching the error knows what is already gone."""
    for sc in sides:
        side = gated.get(sc["path"])
        if there[sc["path"]] and side is not None:
            vol.unlink(side, sync=False)
            deleted.append(sc["path"])
            step("sidecar_unlinked", clip.id)
    if there[clip.path]:
        vol.unlink(gated[clip.path], sync=False)
        deleted.append(clip.path)
        step("clip_unlinked", clip.id)


def _settle(queue: Queue, vol: Volume, clip: Clip, gated: dict[str, Entry] | None, by_hash: bool,
            gate_refusal: Callable[[], str | None], res: WipeResult, blog, clock: Callable[[], float],
            step: Callable[[str, int], None], verified: dict[str, float] | None = None, *,
            since: float = math.inf) -> None:
    """Finish the wipe of a ``wiping`` clip: delete what is still on the camera, fsync, confirm.

    ``gated`` holds the entries the gate passed just now (a new wipe); without it (an interrupted
    or reopened wipe) every file still there passes the whole gate again first."""
    sides = [sc for sc in queue.sidecars(clip.id) if sc["wiped_at"] is None]
    paths = [sc["path"] for sc in sides] + [clip.path]
    try:
        there: dict[str, bool | None] = {p: vol.present(p) for p in paths}  # None: kept on the camera
    except OSError as e:
        _back(queue, clip, _why(e), [], res, blog, clock)
        return
    resumed = gated is None
    gated = dict(gated or {})
    verified = dict(verified or {})
    if resumed and not _regate(queue, vol, clip, sides, paths, there, gated, by_hash, gate_refusal, res, blog,
                               clock, verified, since):
        return
    # Delete: the sidecars, then the clip; nothing is recorded wiped before the directory fsync below.
    deleted: list[str] = []
    try:
        _unlink_gated(vol, clip, sides, there, gated, deleted, step)
    except (SourceChanged, OSError) as e:
        try:
            still = vol.present(clip.path)
        except OSError:
            still = True
        if still:
            gone = [p for p in paths if p in deleted or there[p] is False]
            _back(queue, clip, f"deletion failed: {getattr(e, 'strerror', None) or e}", gone, res, blog, clock,
                  vol=vol)
            return
        there[clip.path] = False  # gone after all (removed meanwhile): settle it below
    # Make the deletions durable before saying they happened.
    gone = [p for p in paths if there[p] is False or p in deleted]
    try:
        synced = _sync_dirs(vol, gone)
    except OSError as e:
        msg = f"deletion not confirmed: directory fsync failed: {e.strerror or e}"
        queue.update_clip(clip.id, last_error=msg)
        queue.record("wipe.incomplete", camera=clip.camera, clip=clip.id, detail={"error": msg}, now=clock())
        blog.error("wipe not confirmed; clip stays wiping", error=msg)
        res.refused.append((clip.id, msg))
        return
    step("dir_fsynced", clip.id)
    for sc in sides:
        if sc["path"] in gone:
            queue.mark_sidecar_wiped(clip.id, sc["path"], now=clock())
    if clip.path in deleted:
        how = "deleted on re-check" if resumed else "after deletion"
    else:
        how = "found gone on re-check" if resumed else "found gone"
    receipt: dict[str, Any] = {"object_key": clip.object_key, "sha256": clip.sha256, "size": clip.size,
                               "path": clip.path, "confirmed": how, "dir_synced": synced}
    if clip.path in gated:  # its bytes on the camera were checked in this pass, just before the unlink
        receipt["checked"] = "sha256" if by_hash else "stat"
        if clip.path in verified:  # read ahead, while uploads ran; the gate found the file unchanged since
            receipt["source_verified_at"] = rfc3339(verified[clip.path])
    if resumed:
        receipt["resumed"] = ("still on the camera after its recorded wipe" if clip.wiped_at is not None
                              else "an interrupted wipe")
    kept = [p for p in paths if there[p] is None]
    if kept:
        receipt["sidecars_kept"] = kept
    try:
        queue.transition(clip.id, ClipEvent.WIPED, expect=ClipState.WIPING, now=clock(), last_error=None,
                         detail={"receipt": receipt})
    except IllegalTransition:
        return
    step("confirmed", clip.id)
    sourcechecks.drop(queue, clip.id)  # they prove nothing more (left behind by a crash: judged stale by ctime)
    blog.info("wiped", path=clip.path, confirmed=how)
    res.wiped.append(clip.id)


def _sync_dirs(vol: Volume, gone: list[str]) -> bool:
    """fsync each directory that held a deleted file; False if the filesystem cannot fsync directories.

    A directory itself gone took its entries with it: nothing left to make durable there."""
    synced = True
    for p in sorted({posixpath.dirname(p): p for p in gone}.values()):
        try:
            synced &= vol.sync_parent(p)
        except SourceChanged:
            continue
    return synced


def _back(queue: Queue, clip: Clip, reason: str, gone: list[str], res: WipeResult, blog,
          clock: Callable[[], float], *, vol: Volume | None = None) -> None:
    """The way back: the clip stays on the camera, ``wiping -> uploaded`` with the reason.

    Sidecars already deleted are made durable and recorded wiped first (they are gone)."""
    if vol is not None and gone:
        try:
            _sync_dirs(vol, gone)
            for sc in queue.sidecars(clip.id):
                if sc["path"] in gone and sc["wiped_at"] is None and sc["path"] != clip.path:
                    queue.mark_sidecar_wiped(clip.id, sc["path"], now=clock())
        except OSError as e:
            blog.warning("could not fsync the camera directory", error=str(e))
    try:
        queue.transition(clip.id, ClipEvent.WIPE_ABORTED, expect=ClipState.WIPING, now=clock(),
                         last_error=f"wipe refused: {reason}", detail={"reason": reason})
    except IllegalTransition:
        return
    blog.warning("wipe not done; clip stays on the camera", reason=reason)
    if reason == OFF_REASON:
        res.returned.append(clip.id)
    else:
        res.refused.append((clip.id, reason))


PRUNE_BATCH = 500  # staged copies pruned per call at most: a tick's work stays bounded after a long outage


def prune_staging(cfg: Config, queue: Queue, *, now: float | None = None, limit: int = PRUNE_BATCH) -> list[int]:
    """Delete staged copies that central storage already holds, after ``keep_staged_hours``.

    Looks only at clips that still have a staged copy and are due (an index search), at most
    ``limit`` per call, oldest first; the next call takes the rest."""
    t = time.time() if now is None else now
    keep = cfg.offload.keep_staged_hours * 3600
    pruned = []
    for c in queue.clips_to_prune(t - keep, limit=limit):
        if not c.staged_path or c.uploaded_at is None or t - c.uploaded_at < keep:
            continue
        paths = [c.staged_path, str(cfg.data_dir / naming.STAGING_DIR / naming.staged_manifest_name(c.id))]
        paths += [sc["staged_path"] for sc in queue.sidecars(c.id) if sc["staged_path"]]
        for p in paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        queue.update_clip(c.id, staged_path=None)
        pruned.append(c.id)
    if pruned:
        queue.record("staging.pruned", detail={"clips": pruned}, now=t)
    return pruned
