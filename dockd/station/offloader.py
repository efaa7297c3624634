"""The offloader: verified, single-pass, signed copies off an untrusted camera volume.

For each clip the scan finds (see :mod:`dockd.camera.volume`):

1. ``discover`` it in the queue; a clip already past ``discovered`` (same
   camera, path, size, mtime) is not copied again (resume, de-duplication).
2. Commit ``copying`` (for a run of up to 16 small clips whose space fits, in
   one transaction before the first of them is copied); then copy and hash in
   one pass into ``staging/<id>.clip.tmp``; fsync; drop its cache; re-read and
   compare the hash (``verify = "reread"``); rename to ``staging/<id>.clip``.
3. Copy sidecars the same way; read the staged copy's container with ffprobe
   (``[offload] media_probe``, :mod:`dockd.evidence.mediaprobe`) and the
   station's clock state (:mod:`dockd.evidence.stationclock`); sign the
   manifest with both (``media``, ``station_clock``); write it beside the clip.
4. fsync the staging directory (every rename above durable), then commit
   ``staged`` with hash, staged path, object key and manifest: one fsync and
   one commit for up to 16 small clips (:class:`_StagedBatch`), never before.

Any failure before step 4 deletes the temporary file and commits
``copy_aborted`` (back to ``discovered``), so the clip is picked up again on
the next dock; a hash mismatch on re-read is retried once from the source and
then ``quarantined`` with both hashes. The staging directory never holds a
file under a final name that the queue doesn't know or that wasn't verified.

Disk space: before step 2 a clip takes its size from the station-wide
:class:`~dockd.station.space.SpaceLedger` (one for all cameras) and waits, ``offloading``
with the reason, while it does not fit beside the copies in flight and the
reserve; it gives the space back once staged or aborted. A full disk during a
copy (ENOSPC) is a pause and a fresh copy when space returns, never a failed
copy and never one of the clip's two copies.

Media facts and kill -9: ffprobe starts on clip N's fsynced copy as soon as
the copy is written (a pool of two probe threads per camera: clip N and N+1 at
most), so it runs while N is re-read and N+1 is copied; ffprobe's start-up
(~50 ms of CPU, whatever the clip size) is then mostly hidden. The probe holds
the file open; its answer is used only if the verified, published copy is
that same file (else the published copy is probed again). The manifest is
built only after the probe has answered (or timed out), so a signed manifest
always carries the facts it was signed with, and ``staged`` is committed after
it, in clip order, as before. A crash at any point of the probe leaves the
clip ``copying``: recovery puts it back to ``discovered`` and deletes its
staged files (the ffprobe child dies with the thread that started it,
``PR_SET_PDEATHSIG``), so the next dock copies, probes and signs it afresh.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from dockd import __version__
from dockd.camera.volume import Entry, Limits, SourceChanged, Volume, escape
from dockd.config import Config
from dockd.core import naming
from dockd.core.events import CameraInfo
from dockd.core.lifecycle import HELD_LOCALLY, STAGED_OR_LATER, ClipEvent, ClipState, ordered
from dockd.core.timefmt import rfc3339, rfc3339_ns
from dockd.evidence import durable, mediaprobe, stationclock
from dockd.evidence import manifest as mf
from dockd.evidence.copier import Cancelled, ShortRead, WriteError, copy_hash
from dockd.evidence.keys import StationKey
from dockd.queue.records import Clip
from dockd.queue.store import Queue
from dockd.station.dockfacts import DockFacts, assess_dock, names_only
from dockd.station.space import SpaceLedger

log = structlog.get_logger("dockd.offload")


class VerifyMismatch(Exception):
    def __init__(self, copied: str, reread: str):
        super().__init__(f"re-read hash {reread} differs from copy hash {copied}")
        self.copied, self.reread = copied, reread


class DiskFull(Exception):
    """The clip can never fit: it needs more than the whole staging disk minus the reserve."""


# A full staging disk is a pause, never a failed copy (see Offloader._copy_room).
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Promised per file written besides its bytes (filesystem metadata; the manifest is one file).
_FILE_OVERHEAD = 64 << 10


@dataclass
class Summary:
    camera: str
    staged: int = 0
    already: int = 0
    quarantined: int = 0
    aborted: int = 0
    bytes: int = 0
    seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wiped_present: list[int] = field(default_factory=list)  # recorded wiped, yet still on the camera
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, *, error: str | None = None, **add: int) -> None:
        """Add to counters (both offload stages report here, from two threads)."""
        with self._lock:
            for k, v in add.items():
                setattr(self, k, getattr(self, k) + v)
            if error:
                self.errors.append(error)

    def to_json(self) -> dict:
        return {"camera": self.camera, "staged": self.staged, "already_offloaded": self.already,
                "quarantined": self.quarantined, "aborted": self.aborted, "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "skipped": self.skipped, "errors": self.errors}


@dataclass
class _Copied:
    """A clip copied into its temporary staging file, on its way to verification and commit."""
    cam: CameraInfo
    vol: Volume
    entry: Entry
    sides: list[Entry]
    clip_id: int
    cancel: threading.Event
    s: Summary
    blog: Any
    sha: str = ""
    tries: int = 0  # copies made so far (two at most: see Offloader._copy_retrying)
    held: int = 0  # bytes promised by the station's SpaceLedger, given back once staged or aborted
    facts: DockFacts | None = None  # this dock's facts for the manifest (names, device id, dock)
    probe: Future | None = None  # media facts of the copy, probed while it is verified (Offloader._media)
    probed: tuple[int, int] | None = None  # (st_dev, st_ino) of the file that probe reads
    batch: _StagedBatch | None = None  # where its ``staged`` commit waits (None: committed at once)
    flush: bool = True  # commit the batch once this clip joined it (the next clip is big, or none follows)


# A batch of ``staged`` commits is flushed at this many clips, or at once after a clip this big (its copy
# took long enough that one more fsync and commit are noise, and its upload should not wait).
BATCH_CLIPS = 16
BATCH_BIG = 32 << 20


class _StagedBatch:
    """Clips verified, published and signed, whose ``staged`` commit waits for the batch: one fsync of the
    staging directory and one queue commit for up to BATCH_CLIPS clips instead of two directory fsyncs and
    a commit each.

    The guarantee is unchanged: a clip is committed ``staged`` only after its copy was fsynced, re-read,
    renamed, its manifest signed and fsynced, and (in :meth:`flush`, before the commit) the directory
    holding those renames fsynced. Until then it is ``copying``, which claims nothing: a crash resets it
    to ``discovered`` and start-up deletes its files (:meth:`Offloader.recover`). Counters and the
    ``staged`` log line follow the commit, never precede it. Used by the finishing thread, then (once
    that thread is done) by the thread that ends the offload."""

    def __init__(self, off: Offloader):
        self.off = off
        self.items: list[tuple[int, dict[str, Any], Any, Summary, int, dict[str, str]]] = []

    def add(self, clip_id: int, values: dict[str, Any], blog, s: Summary, size: int,
            media: dict[str, str]) -> None:
        self.items.append((clip_id, values, blog, s, size, media))

    def flush(self) -> None:
        if not self.items:
            return
        items, self.items = self.items, []
        durable.fsync_dir(self.off.staging)  # every rename of the batch durable before any `staged` commit
        self.off.queue.transition_many([(cid, ClipEvent.STAGED, v) for cid, v, *_ in items])
        for _, v, blog, s, size, media in items:
            blog.info("staged", sha256=v["sha256"], size=size, **media)
            s.count(staged=1, bytes=size)


def _media_detail(media: dict[str, Any] | None) -> dict[str, str]:
    """The probe's outcome in the ``staged`` audit row and log line: ``ok`` or the reason (facts: manifest)."""
    if media is None:
        return {}
    return {"media": "ok" if media.get("ok") is True else str(media.get("reason"))}


def _why(e: BaseException) -> str:
    return f"{e.strerror or e}" if isinstance(e, OSError) else f"{e}"


class Offloader:
    def __init__(self, cfg: Config, queue: Queue, key: StationKey, *, clock: Callable[[], float] = time.time,
                 on_progress: Callable[[str, int], None] | None = None,
                 on_status: Callable[[str, str | None], None] | None = None, space: SpaceLedger | None = None):
        self.cfg, self.queue, self.key, self.clock = cfg, queue, key, clock
        self.staging = cfg.data_dir / naming.STAGING_DIR
        self.staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.on_progress = on_progress  # (camera serial, bytes) for throughput meters
        self.on_status = on_status  # (camera serial, reason) while paused for disk space
        o = cfg.offload
        self.limits = Limits(int(o.max_file_size_gb * (1 << 30)), o.max_depth, o.max_entries)
        self.bufsize = o.buffer_kb * 1024
        self.reserve = o.reserve_free_mb << 20
        # One ledger for every camera this offloader serves (the daemon has one offloader).
        self.space = space or SpaceLedger(self.staging, self.reserve)
        self.space_poll_s = 1.0  # how often a paused copy looks at the disk again
        self.prober = mediaprobe.Prober(o.ffprobe, o.media_probe_timeout_s, cfg.sources.user) \
            if o.media_probe else None

    # -- staging paths (named by clip id; never from camera names)

    def staged_path(self, clip_id: int) -> Path:
        return self.staging / naming.staged_clip_name(clip_id)

    def sidecar_path(self, clip_id: int, n: int) -> Path:
        return self.staging / naming.staged_sidecar_name(clip_id, n)

    def manifest_path(self, clip_id: int) -> Path:
        return self.staging / naming.staged_manifest_name(clip_id)

    # -- one camera

    def offload(self, cam: CameraInfo, root: Path, cancel: threading.Event | None = None) -> Summary:
        """Offload every clip on the volume at ``root``. Never raises for a single bad clip.

        Two clips are in hand at once: while clip N is copied from the camera,
        clip N-1 is re-read, published, signed and committed by a second thread
        (the camera and the staging disk both stay busy). Clips are still
        committed in order, and at most one copied-but-unverified file waits.
        """
        cancel = cancel or threading.Event()
        t0 = time.monotonic()
        s = Summary(cam.serial)
        clip_globs = cam.clip_globs or self.cfg.offload.clip_globs
        side_globs = cam.sidecar_globs or self.cfg.offload.sidecar_globs
        with Volume(root) as vol:
            scan = vol.scan(tuple(clip_globs), tuple(side_globs), self.limits)
            for sk in scan.skipped:
                s.skipped.append({"path": sk.path, "reason": sk.reason})
                if self.queue.add_skip(cam.serial, sk.path, sk.reason, now=self.clock()):
                    log.warning("entry skipped", camera=cam.serial, path=sk.path, reason=sk.reason)
            facts = self._dock_facts(cam, vol, scan)  # before _settle_vanished: it needs the clips left pending
            self._settle_vanished(cam.serial, scan)
            known = self.queue.discover_many(cam.serial, [(e.path, e.size, e.mtime_ns) for e in scan.clips],
                                             now=self.clock())
            with ThreadPoolExecutor(2, thread_name_prefix=f"probe-{cam.serial}") as probes, \
                    ThreadPoolExecutor(1, thread_name_prefix=f"verify-{cam.serial}") as finisher:
                pending: Future | None = None
                batch = _StagedBatch(self)
                marked: dict[int, int] = {}  # committed `copying` ahead of their copy: clip id -> bytes promised
                try:
                    for i, entry in enumerate(scan.clips):
                        if cancel.is_set():
                            raise Cancelled()
                        clip = known[(entry.path, entry.size, entry.mtime_ns)]
                        if clip.state is not ClipState.DISCOVERED:
                            s.count(already=1)
                            if clip.state is ClipState.WIPED:  # never counted as done: see wipe.reopen_wiped
                                s.wiped_present.append(clip.id)
                            continue
                        if clip.id not in marked:
                            self._mark_run(cam.serial, scan, known, i, marked)
                        job = self._copy_stage(cam, vol, entry, scan.sidecars.get(entry.path, []), clip, cancel, s,
                                               facts, premarked=marked.pop(clip.id, None))
                        if job is not None:
                            job.batch = batch
                            nxt = scan.clips[i + 1] if i + 1 < len(scan.clips) else None
                            job.flush = nxt is None or entry.size >= BATCH_BIG or nxt.size >= BATCH_BIG
                            self._start_probe(job, probes)
                        if pending is not None:
                            try:
                                pending.result()  # clip N-1 settled before clip N is handed over
                            except BaseException:
                                if job is not None:
                                    self._cancelled(job)
                                raise
                            finally:
                                pending = None
                        pending = finisher.submit(self._finish_stage, job) if job else None
                finally:
                    try:
                        if pending is not None:
                            pending.result()  # raises Cancelled if the last clip was cancelled
                    finally:
                        try:
                            batch.flush()  # clips finished before a cancel or an error are staged all the same
                        finally:
                            self._unmark(marked)
        s.seconds = time.monotonic() - t0
        return s

    @staticmethod
    def _need(entry: Entry, sides: list[Entry]) -> int:
        """Bytes a clip takes from the space ledger: its size, its sidecars' and the files' overhead."""
        return entry.size + sum(x.size for x in sides) + _FILE_OVERHEAD * (len(sides) + 2)

    def _mark_run(self, serial: str, scan, known: dict, i: int, marked: dict[int, int]) -> None:
        """Commit ``copying`` for the run of small clips starting at ``scan.clips[i]`` (up to BATCH_CLIPS, each
        below BATCH_BIG) in one transaction, each with its space already promised, instead of one commit per
        clip on the copy's critical path. Only clips whose space fits now are marked (a clip that must wait for
        space goes the ordinary way: ``discovered`` while it waits); a run of one is left to the ordinary way.

        ``copying`` is still committed before any byte of the clip is written. A clip marked but never reached
        (cancel, error) is put back to ``discovered`` by :meth:`_unmark`; after a crash, by :meth:`recover`."""
        run: list[tuple[int, int]] = []
        for entry in scan.clips[i:i + BATCH_CLIPS]:
            clip = known[(entry.path, entry.size, entry.mtime_ns)]
            if clip.state is not ClipState.DISCOVERED or entry.size >= BATCH_BIG or clip.id in marked:
                break
            need = self._need(entry, scan.sidecars.get(entry.path, []))
            if not self.space.take(need)[0]:
                break
            run.append((clip.id, need))
        if len(run) < 2:
            for _, need in run:
                self.space.release(need)
            return
        try:
            self.queue.transition_many([(cid, ClipEvent.COPY_STARTED, {"now": self.clock()}) for cid, _ in run])
        except BaseException:
            for _, need in run:
                self.space.release(need)
            raise
        marked.update(run)

    def _unmark(self, marked: dict[int, int]) -> None:
        """Clips committed ``copying`` by :meth:`_mark_run` whose copy never started: back to ``discovered`` (no
        error of theirs: nothing of them was written) and their space given back."""
        if not marked:
            return
        items, held = list(marked), sum(marked.values())
        marked.clear()
        try:
            self.queue.transition_many([(cid, ClipEvent.COPY_ABORTED,
                                         {"now": self.clock(), "last_error": None,
                                          "detail": {"reason": "not started (the offload stopped first)"}})
                                        for cid in items])
        finally:
            self.space.release(held)

    def _dock_facts(self, cam: CameraInfo, vol: Volume, scan) -> DockFacts:
        """This dock's facts (dockd/station/dockfacts.py), recorded once per dock. Never raises: a failure
        is logged and audited (``camera.facts_failed``) and the clips are copied with the names alone."""
        try:
            return assess_dock(self.cfg, self.queue, cam, vol, scan, now=self.clock())
        except Exception as e:  # noqa: BLE001 - facts about the card never stop its offload
            log.exception("dock facts failed; offloading on", camera=cam.serial)
            try:
                self.queue.record("camera.facts_failed", camera=cam.serial,
                                  detail={"error": f"{type(e).__name__}: {e}"[:1000]}, now=self.clock())
            except Exception:  # noqa: BLE001
                log.exception("could not audit the failure", camera=cam.serial)
            try:
                return names_only(self.cfg, cam)
            except Exception:  # noqa: BLE001
                return DockFacts(profile=cam.profile)

    def _settle_vanished(self, serial: str, scan) -> None:
        """A clip seen before but never copied, now changed or gone from the camera, needs a person.

        Cameras do not alter finished recordings, so this is quarantined (with
        the reason) rather than silently forgotten; the new version of the file,
        if any, is a clip of its own.
        """
        seen = {(e.path, e.size, e.mtime_ns) for e in scan.clips}
        unsure = {sk.path for sk in scan.skipped}
        if not scan.complete:
            return  # the scan is incomplete: absence proves nothing
        for c in self.queue.clips(camera=serial, state=ClipState.DISCOVERED):
            if (c.path, c.size, c.mtime_ns) in seen or escape(c.path) in unsure:
                continue
            why = "changed or removed on the camera before it could be copied"
            self.queue.transition(c.id, ClipEvent.QUARANTINE, now=self.clock(), last_error=why,
                                  detail={"reason": why})
            log.warning("clip quarantined: " + why, clip=c.id, camera=serial, path=c.path)

    def _copy_stage(self, cam: CameraInfo, vol: Volume, entry: Entry, sides: list[Entry], clip: Clip,
                    cancel: threading.Event, s: Summary, facts: DockFacts | None = None,
                    premarked: int | None = None) -> _Copied | None:
        """Commit ``copying``, then copy and hash the clip into its fsynced temporary file.

        Returns the job for :meth:`_finish_stage`, or None if the copy was aborted
        (the clip is back to ``discovered``) or can never fit. Raises Cancelled (after
        cleaning up). Its size is taken from the station's space ledger first.
        ``premarked``: the clip is already committed ``copying`` with that many bytes promised
        (:meth:`_mark_run`); this call owns both from now on."""
        if premarked is not None:
            held = premarked
            return self._copy_job(cam, vol, entry, sides, clip, cancel, s, facts, held)
        need = self._need(entry, sides)
        try:
            held = self.wait_for_space(cam.serial, need, cancel)
        except DiskFull as e:
            msg = f"not copied: {e}"
            self.queue.record("offload.too_large", camera=cam.serial, clip=clip.id,
                              detail={"reason": msg, "need": need}, now=self.clock())
            log.error(msg, clip=clip.id, camera=cam.serial)
            s.count(aborted=1, error=f"{escape(entry.path)}: {msg}")
            return None
        try:
            clip = self.queue.transition(clip.id, ClipEvent.COPY_STARTED, now=self.clock())
        except BaseException:
            self.space.release(held)
            raise
        return self._copy_job(cam, vol, entry, sides, clip, cancel, s, facts, held)

    def _copy_job(self, cam: CameraInfo, vol: Volume, entry: Entry, sides: list[Entry], clip: Clip,
                  cancel: threading.Event, s: Summary, facts: DockFacts | None, held: int) -> _Copied | None:
        """The copy of a clip committed ``copying`` with ``held`` bytes promised (see :meth:`_copy_stage`)."""
        blog = log.bind(clip=clip.id, camera=cam.serial)
        blog.info("copying", path=entry.path, size=entry.size)
        job = _Copied(cam, vol, entry, sorted(sides, key=lambda e: e.path), clip.id, cancel, s, blog, held=held,
                      facts=facts)
        try:
            try:
                job.sha, job.tries = self._copy_retrying(vol, entry, self.staged_path(clip.id), cancel, cam.serial)
            except Cancelled:
                self._cancelled(job)
                raise
            except (SourceChanged, ShortRead, WriteError, OSError) as e:
                self._abort(clip.id, entry, len(sides), f"copy aborted: {_why(e)}", blog, s)
                self._release(job)
                return None
        except BaseException:
            self._release(job)  # whatever went wrong, the promise is given back
            raise
        return job

    def _release(self, job: _Copied) -> None:
        """Give the job's promised space back to the station (once)."""
        held, job.held = job.held, 0
        self.space.release(held)

    def _finish_stage(self, job: _Copied) -> None:
        """Verify the copied clip (re-read), publish it, stage its sidecars, sign, commit ``staged``.

        Never raises for a bad clip (it is quarantined or put back to
        ``discovered``); raises Cancelled after cleaning up. Gives the job's
        promised space back once it is settled, whatever happened."""
        try:
            self._finish_held(job)
        finally:
            self._release(job)

    def _finish_held(self, job: _Copied) -> None:
        cam, entry, clip_id, s, blog = job.cam, job.entry, job.clip_id, job.s, job.blog
        dest = self.staged_path(clip_id)
        try:
            job.sha = self._verify_or_recopy(job.vol, entry, dest, job.sha, job.tries, job.cancel, cam.serial,
                                             sync_dir=False)
            side_rows: list[dict[str, Any]] = []
            for n, se in enumerate(job.sides):
                sp = self.sidecar_path(clip_id, n)
                ssha = self._stage_verified(job.vol, se, sp, job.cancel, cam.serial, sync_dir=False)
                side_rows.append({"path": se.path, "size": se.size, "mtime_ns": se.mtime_ns, "sha256": ssha,
                                  "staged_path": str(sp)})
        except VerifyMismatch as e:
            self._cleanup(clip_id, len(job.sides))
            self.queue.transition(clip_id, ClipEvent.QUARANTINE, now=self.clock(),
                                  last_error=f"staged copy failed verification twice: {e}",
                                  detail={"reason": "verify mismatch", "copied_sha256": e.copied,
                                          "reread_sha256": e.reread})
            blog.error("quarantined: staged copy does not verify", copied=e.copied, reread=e.reread)
            s.count(quarantined=1)
            return
        except Cancelled:
            self._cancelled(job)
            raise
        except (SourceChanged, ShortRead, WriteError, OSError) as e:
            self._abort(clip_id, entry, len(job.sides), f"copy aborted: {_why(e)}", blog, s)
            return

        sha = job.sha
        # Facts about the staged copy (never the camera) and the station clock, signed with the clip.
        media = self._media(job, dest)
        clock = stationclock.read()
        mtime = rfc3339_ns(entry.mtime_ns)
        # The chain head as of now, signed into the manifest: it leaves the station with the clip and anchors
        # the audit log outside this database (`dockd audit --verify --remote`).
        a_seq, a_hash = self.queue.last_audit()
        body = mf.build(sha256=sha, size=entry.size, path=entry.path, mtime=mtime, camera=cam.manifest_fields(),
                        station_id=self.cfg.station.id, offloaded_at=rfc3339(self.clock()),
                        verify=self.cfg.offload.verify,
                        sidecars=[{"path": r["path"], "size": r["size"], "sha256": r["sha256"],
                                   "mtime": rfc3339_ns(r["mtime_ns"])} for r in side_rows],
                        dockd_version=__version__, audit={"seq": a_seq, "hash": a_hash} if a_seq else None)
        self._add_dock_facts(body, job)
        if media is not None:
            body["media"] = media
        body["station_clock"] = clock
        signed = mf.sign(body, self.key)
        while True:
            try:
                # the directory is fsynced once for the clip's renames, before its `staged` commit
                durable.write_atomic(self.manifest_path(clip_id), mf.dumps(signed), mode=0o600, sync_dir=False)
                break
            except OSError as e:
                if e.errno not in _NO_SPACE:
                    self._abort(clip_id, entry, len(job.sides),
                                f"copy aborted: writing the manifest failed: {e.strerror or e}", blog, s)
                    return
                try:
                    self._pause_until_room(cam.serial, job.cancel, f"writing a manifest: {e.strerror}")
                except Cancelled:
                    self._cancelled(job)
                    raise
        prefix = self.cfg.storage.prefix if self.cfg.storage else ""
        key = naming.object_key(prefix, self.cfg.station.id, cam.serial, entry.mtime_ns, sha, entry.ext)
        values = dict(now=self.clock(), sha256=sha, sidecar_rows=side_rows, staged_path=str(dest), object_key=key,
                      manifest=json.dumps(signed, sort_keys=True, ensure_ascii=False),
                      verify_mode=self.cfg.offload.verify, last_error=None,
                      detail={"sha256": sha, "size": entry.size, "verify": self.cfg.offload.verify,
                              "sidecars": len(side_rows), **_media_detail(media)})
        batch = job.batch or _StagedBatch(self)
        batch.add(clip_id, values, blog, s, entry.size, _media_detail(media))
        if job.batch is None or job.flush or len(batch.items) >= BATCH_CLIPS:
            batch.flush()

    @staticmethod
    def _add_dock_facts(body: dict[str, Any], job: _Copied) -> None:
        """The manifest's camera.device_id (only when known, like the camera's other fields), name_facts
        and dock (README "Continuity at the dock")."""
        f = job.facts or DockFacts(profile=job.cam.profile)
        if f.device_id is not None:
            body["camera"] = dict(body["camera"], device_id=f.device_id)
        body["name_facts"] = f.name_facts(job.entry.path)
        body["dock"] = f.dock

    def _start_probe(self, job: _Copied, probes: ThreadPoolExecutor) -> None:
        """Start ffprobe on the clip's fsynced copy as soon as it is written, so that it runs while the copy is
        re-read and the next clip is copied (two probes at most: clip N and N+1). The descriptor pins the
        file: :meth:`_media` uses the answer only if the published copy is that same file."""
        if self.prober is None:
            return
        try:
            fd = mediaprobe.open_staged(self._tmp(self.staged_path(job.clip_id)))
        except OSError:
            return  # _media probes the published copy instead
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return
        prober = self.prober

        def run() -> dict[str, Any]:
            try:
                return prober.probe_fd(fd)
            finally:
                os.close(fd)

        job.probed = (st.st_dev, st.st_ino)
        job.probe = probes.submit(run)

    def _media(self, job: _Copied, dest: Path) -> dict[str, Any] | None:
        """The media facts of the published copy ``dest``: the early probe's, if it read this very file (not a
        copy made again after a failed verification), else a probe of ``dest`` now."""
        if self.prober is None:
            return None
        if job.probe is not None:
            early = job.probe.result()
            try:
                st = os.stat(dest)
                if (st.st_dev, st.st_ino) == job.probed:
                    return early
            except OSError:
                pass
        return self.prober.probe(dest)

    def _cancelled(self, job: _Copied) -> None:
        self._cleanup(job.clip_id, len(job.sides))
        self.queue.transition(job.clip_id, ClipEvent.COPY_ABORTED, now=self.clock(),
                              last_error="copy cancelled (undocked or stopping)", detail={"reason": "cancelled"})
        self._release(job)

    @staticmethod
    def _tmp(dest: Path) -> Path:
        return dest.with_name(dest.name + durable.TMP_SUFFIX)

    def _stage_verified(self, vol: Volume, entry: Entry, dest: Path, cancel: threading.Event, serial: str,
                        sync_dir: bool = True) -> str:
        """Copy with hash, fsync, re-read, publish: both stages in the calling thread (sidecars)."""
        sha, tries = self._copy_retrying(vol, entry, dest, cancel, serial)
        return self._verify_or_recopy(vol, entry, dest, sha, tries, cancel, serial, sync_dir=sync_dir)

    def _copy_retrying(self, vol: Volume, entry: Entry, dest: Path, cancel: threading.Event,
                       serial: str) -> tuple[str, int]:
        """Copy into ``dest``'s temporary file; a write/fsync error copies once more from the source.

        Returns (SHA-256, copies made). Two copies at most per clip, whatever failed:
        :meth:`_verify_or_recopy` spends what this one left."""
        for attempt in (1, 2):
            try:
                return self._copy_room(vol, entry, self._tmp(dest), cancel, serial), attempt
            except WriteError as e:
                if attempt == 2:
                    raise
                log.warning("staging write failed; copying again from the camera", camera=serial,
                            path=entry.path, error=str(e))
        raise AssertionError("unreachable")

    def _verify_or_recopy(self, vol: Volume, entry: Entry, dest: Path, sha: str, tries: int,
                          cancel: threading.Event, serial: str, sync_dir: bool = True) -> str:
        """Verify and publish the copy; on a re-read mismatch copy once more from the source if
        only one copy was made so far (else VerifyMismatch). Returns the published SHA-256."""
        try:
            self._verify_and_publish(self._tmp(dest), dest, sha, entry.size, cancel, serial, sync_dir=sync_dir)
            return sha
        except VerifyMismatch:
            if tries >= 2:
                raise
            log.warning("re-read mismatch; copying again from the camera", camera=serial, path=entry.path)
        return self._stage_once(vol, entry, dest, cancel, serial, sync_dir)

    def _stage_once(self, vol: Volume, entry: Entry, dest: Path, cancel: threading.Event, serial: str,
                    sync_dir: bool = True) -> str:
        sha = self._copy_room(vol, entry, self._tmp(dest), cancel, serial)
        self._verify_and_publish(self._tmp(dest), dest, sha, entry.size, cancel, serial, sync_dir=sync_dir)
        return sha

    def _copy_room(self, vol: Volume, entry: Entry, tmp: Path, cancel: threading.Event, serial: str) -> str:
        """:meth:`_copy_once`, where a full staging disk (ENOSPC, EDQUOT) is a pause, not a failure:
        the partial file is gone, the camera waits (``offloading``, with the reason) until the space
        is free again and the copy starts over. Such a copy is not one of the clip's two copies."""
        while True:
            try:
                return self._copy_once(vol, entry, tmp, cancel, serial)
            except WriteError as e:
                if e.errno not in _NO_SPACE:
                    raise
                self._pause_until_room(serial, cancel, f"{escape(entry.path)}: {e}")

    def _copy_once(self, vol: Volume, entry: Entry, tmp: Path, cancel: threading.Event, serial: str) -> str:
        """Copy and hash ``entry`` into ``tmp`` (fsynced, cache dropped); return the SHA-256 read."""
        tmp.unlink(missing_ok=True)
        src = vol.open(entry)
        try:
            dfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                report = self.on_progress
                progress = (lambda n: report(serial, n)) if report else None
                sha = copy_hash(src, dfd, entry.size, bufsize=self.bufsize, cancel=cancel, progress=progress)
                # A failed fsync is never retried: the pages may be gone. The
                # exception propagates, the temporary file is deleted below
                # and the clip is copied again from the camera.
                try:
                    os.fsync(dfd)
                except OSError as e:
                    raise WriteError(e) from e
                durable.drop_cache(dfd)
            finally:
                os.close(dfd)
            vol.check_same(entry, os.fstat(src))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(src)
        return sha

    def _verify_and_publish(self, tmp: Path, dest: Path, sha: str, size: int, cancel: threading.Event,
                            serial: str = "", sync_dir: bool = True) -> None:
        """Re-read ``tmp`` from the disk (``verify = "reread"``) and rename it to ``dest``, durably.

        A mismatch deletes ``tmp`` and raises VerifyMismatch. A rename refused for want of
        space (a directory block to grow) waits for space and renames again."""
        try:
            if self.cfg.offload.verify == "reread":
                if cancel.is_set():
                    raise Cancelled()
                got, n = durable.sha256_file(tmp, bufsize=self.bufsize, uncached=True)
                if got != sha or n != size:
                    raise VerifyMismatch(sha, got)
            while True:
                try:
                    durable.publish(tmp, dest, sync_dir=sync_dir)
                    break
                except OSError as e:
                    if e.errno not in _NO_SPACE or not tmp.exists():
                        raise
                    self._pause_until_room(serial, cancel, f"renaming a verified copy: {e.strerror}")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _abort(self, clip_id: int, entry: Entry, n_sides: int, msg: str, blog, s: Summary) -> None:
        """Discard the partial copy and put the clip back to ``discovered``: the next dock copies it again."""
        self._cleanup(clip_id, n_sides)
        self.queue.transition(clip_id, ClipEvent.COPY_ABORTED, now=self.clock(), last_error=msg,
                              detail={"reason": msg})
        blog.warning("copy aborted; will copy again on next dock", error=msg)
        s.count(aborted=1, error=f"{escape(entry.path)}: {msg}")

    def _cleanup(self, clip_id: int, n_sides: int) -> None:
        paths = [self.staged_path(clip_id), self.manifest_path(clip_id)]
        paths += [self.sidecar_path(clip_id, i) for i in range(n_sides)]
        for p in paths:
            for q in (p, p.with_name(p.name + durable.TMP_SUFFIX)):
                q.unlink(missing_ok=True)

    # -- disk-space guard (one SpaceLedger for every camera: see dockd/station/space.py)

    def wait_for_space(self, serial: str, need: int, cancel: threading.Event, poll_s: float | None = None) -> int:
        """Block (cancellably) until ``need`` bytes are promised to this copy by the station's space
        ledger (free - promised to other copies - reserve >= need); return the bytes promised, for
        :meth:`SpaceLedger.release` once the copy is staged or aborted.

        Raises DiskFull at once if ``need`` plus the reserve exceeds the whole disk (it would wait
        forever) and Cancelled if ``cancel`` is set while waiting."""
        poll = self.space_poll_s if poll_s is None else poll_s
        ok, free = self.space.take(need)
        if ok:
            return need
        total = self.space.total()
        if need + self.reserve > total:
            raise DiskFull(f"needs {need >> 20} MiB plus reserve {self.reserve >> 20} MiB; "
                           f"the staging disk holds {total >> 20} MiB")
        msg = (f"paused: staging disk full ({free >> 20} MiB free, {self.space.reserved >> 20} MiB promised to "
               f"copies in flight, clip needs {need >> 20} MiB plus reserve {self.reserve >> 20} MiB)")
        self._paused(serial, msg)
        while True:
            if cancel.is_set():
                raise Cancelled()
            ok, _ = self.space.take(need, wait=poll)
            if ok:
                if self.on_status:
                    self.on_status(serial, None)
                return need

    def _pause_until_room(self, serial: str, cancel: threading.Event, why: str) -> None:
        """After ENOSPC: wait (cancellably; at least one poll, so a disk that lies is not hammered)
        until the space promised to every copy in flight and the reserve are free again."""
        self._paused(serial, f"paused: staging disk full ({why}); copying again when space returns")
        while True:
            if cancel.wait(self.space_poll_s):
                raise Cancelled()
            if self.space.whole():
                break
        if self.on_status:
            self.on_status(serial, None)

    def _paused(self, serial: str, msg: str) -> None:
        log.warning(msg, camera=serial)
        self.queue.record("offload.paused", camera=serial, detail={"reason": msg}, now=self.clock())
        if self.on_status:
            self.on_status(serial, msg)

    # -- crash recovery

    def recover(self) -> dict:
        """At start-up: reset interrupted copies and remove staging files the queue does not vouch for."""
        reset = []
        for c in self.queue.clips(state=ClipState.COPYING):
            self.queue.transition(c.id, ClipEvent.COPY_ABORTED, now=self.clock(),
                                  last_error="copy interrupted by a crash or restart",
                                  detail={"reason": "recovery"})
            reset.append(c.id)
        keep: set[str] = set()
        # quarantined clips keep their staged copy and manifest: they are evidence under investigation
        # only clips that still have a staged copy: start-up never reads the pruned history
        for c in self.queue.clips_with_staged_copy(ordered(STAGED_OR_LATER | {ClipState.QUARANTINED})):
            if c.staged_path:
                keep.add(Path(c.staged_path).name)
                keep.add(self.manifest_path(c.id).name)
                keep.update(Path(r["staged_path"]).name for r in self.queue.sidecars(c.id) if r["staged_path"])
        removed = []
        for p in self.staging.iterdir():
            if p.name not in keep:
                p.unlink(missing_ok=True)
                removed.append(p.name)
        missing = [c.id for c in self.queue.clips(state=ordered(HELD_LOCALLY))
                   if not c.staged_path or not Path(c.staged_path).exists()]
        if reset or removed or missing:
            self.queue.record("recovery.staging", detail={"reset_copies": reset, "removed_files": removed,
                                                          "missing_staged": missing}, now=self.clock())
        for cid in missing:
            self.queue.raise_alarm(f"staged-missing-{cid}", f"clip {cid}: staged copy missing; it stays on camera",
                                   now=self.clock())
        return {"reset": reset, "removed": removed, "missing": missing}

