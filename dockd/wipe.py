"""The wipe gate: the only code that deletes anything from a camera.

A clip is deleted only when all of these hold, checked in this order:

1. its queue state is ``uploaded`` and policy allows wiping
   (:func:`dockd.lifecycle.may_wipe`: storage configured, ``wipe = "after-upload"``);
2. with Object Lock configured, the bucket enforces it;
3. the file on the camera still has the recorded size and mtime, and (unless
   ``wipe_check = "stat"``) re-hashes to the recorded SHA-256;
4. the ``wiped`` transition, with its receipt (clip, object key, checksum,
   time), is committed to the queue.

Only then is the file unlinked. Sidecars go the same way, each checked
against its own recorded hash. A clip that fails a check stays on the camera
and the refusal is a ``wipe.refused`` audit event (recorded once per reason,
not on every pass of the daemon); Object Lock not being enforced also raises
the ``object-lock`` alarm.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from . import durable
from .config import Config
from .errors import IllegalTransition
from .lifecycle import ClipEvent, ClipState, may_wipe
from .queue import Clip, Queue
from .volume import Entry, SourceChanged, Volume, escape

log = structlog.get_logger("dockd.wipe")


@dataclass
class WipeResult:
    wiped: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)


def _check_source(vol: Volume, path: str, size: int, mtime_ns: int, sha256: str, by_hash: bool) -> Entry:
    """Raise SourceChanged unless the camera file still is what was offloaded."""
    st = vol.lstat(path)
    e = Entry(path, size, mtime_ns, st.st_dev, st.st_ino)
    Volume.check_same(e, st, same_inode=False)
    if by_hash:
        fd = vol.open(e)
        try:
            got, _ = durable.sha256_fd(fd)
        finally:
            os.close(fd)
        if got != sha256:
            raise SourceChanged(f"{escape(path)}: content on camera hashes to {got}, not {sha256}")
    return e


def _refuse(queue: Queue, clip: Clip, reason: str, res: WipeResult, blog, now: float) -> None:
    """Keep the clip on the camera; say why once (not on every pass of the daemon)."""
    res.refused.append((clip.id, reason))
    msg = f"wipe refused: {reason}"
    if clip.last_error == msg:
        return
    queue.record("wipe.refused", camera=clip.camera, clip=clip.id, detail={"reason": reason}, now=now)
    queue.update_clip(clip.id, last_error=msg)
    blog.warning("wipe refused", reason=reason)


def wipe_clips(cfg: Config, queue: Queue, vol: Volume, clips: list[Clip], *, lock_ok: Callable[[], bool],
               clock: Callable[[], float] = time.time) -> WipeResult:
    """Pass each clip through the gate and delete those that pass. Never raises for one clip."""
    res = WipeResult()
    by_hash = cfg.offload.wipe_check == "hash"
    lock_verdict: list[bool] = []  # asked once per batch, and only if a clip gets that far

    def locked() -> bool:
        if not lock_verdict:
            try:
                lock_verdict.append(bool(lock_ok()))
            except Exception as e:  # noqa: BLE001 - cannot tell: do not wipe
                log.warning("cannot tell whether the bucket enforces Object Lock", error=str(e))
                lock_verdict.append(False)
        return lock_verdict[0]

    for clip in clips:
        if not may_wipe(clip.state, storage_configured=cfg.storage is not None, wipe_mode=cfg.offload.wipe):
            continue
        assert cfg.storage is not None
        blog = log.bind(clip=clip.id, camera=clip.camera)
        if (cfg.storage.object_lock_days or cfg.storage.legal_hold) and not locked():
            reason = "Object Lock is configured but the bucket does not enforce it"
            queue.raise_alarm("object-lock", reason, now=clock())
            _refuse(queue, clip, reason, res, blog, clock())
            continue
        try:
            entry = _check_source(vol, clip.path, clip.size, clip.mtime_ns, clip.sha256 or "", by_hash)
            sides = [(sc, _check_source(vol, sc["path"], sc["size"], sc["mtime_ns"], sc["sha256"], by_hash))
                     for sc in queue.sidecars(clip.id) if sc["wiped_at"] is None]
        except (SourceChanged, OSError) as e:
            reason = str(e) if isinstance(e, SourceChanged) else f"cannot check source: {e.strerror or e}"
            _refuse(queue, clip, reason, res, blog, clock())
            continue
        try:
            queue.transition(clip.id, ClipEvent.WIPED, expect=ClipState.UPLOADED, now=clock(),
                             detail={"receipt": {"object_key": clip.object_key, "sha256": clip.sha256,
                                                 "size": clip.size, "path": clip.path,
                                                 "checked": "sha256" if by_hash else "stat"}})
        except IllegalTransition:
            continue
        try:
            for sc, se in sides:
                vol.unlink(se)
                queue.mark_sidecar_wiped(clip.id, sc["path"], now=clock())
            vol.unlink(entry)
        except (SourceChanged, OSError) as e:
            msg = f"deletion incomplete: {getattr(e, 'strerror', None) or e}"
            queue.update_clip(clip.id, last_error=msg)
            queue.record("wipe.incomplete", camera=clip.camera, clip=clip.id, detail={"error": msg}, now=clock())
            blog.error("wipe incomplete; file stays on camera", error=msg)
            continue
        blog.info("wiped", path=clip.path)
        res.wiped.append(clip.id)
    return res


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
        paths = [c.staged_path, str(cfg.data_dir / "staging" / f"{c.id:010d}.manifest.json")]
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
