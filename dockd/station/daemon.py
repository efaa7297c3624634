"""The daemon: wires sources, offloader, uploader and wipe gate around the queue.

Threads:

* sources put domain events (:mod:`dockd.core.events`) on ``self.events``;
* the main loop takes them, starts one camera worker per docked camera (at
  most ``[offload] parallel_cameras`` at a time) and cancels it on undock;
* ``[storage] concurrency`` upload workers claim staged clips from the
  queue, so the first clip of a camera uploads while the rest are still
  being offloaded, and a storage outage never blocks offloading;
* a camera worker, once its clips are offloaded, waits for their uploads and
  passes them through the wipe gate, then sets the camera ``ready``. With
  ``wipe_check = "hash"`` it does not just wait: it re-reads each clip's source
  on the camera while the uploads run (the camera is otherwise idle) and wipes
  the clips so proven as their uploads finish (:func:`policy.shift_verdict`).

Everything the daemon knows survives in the queue; on start it recovers
interrupted copies, releases stale leases and aborts multipart uploads the
queue does not know.
"""

from __future__ import annotations

import hashlib
import os
import queue as queue_mod
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from dockd import __version__
from dockd.camera import mounts
from dockd.camera.volume import Volume
from dockd.config import Config
from dockd.core import policy
from dockd.core.events import Docked, Rejected, Undocked, valid_serial
from dockd.core.lifecycle import CameraState, ClipState
from dockd.evidence import keys
from dockd.evidence.copier import Cancelled
from dockd.queue import sourcechecks
from dockd.queue.records import Clip
from dockd.queue.store import Queue
from dockd.station.offloader import Offloader
from dockd.station.runtime import DataDirLock, run_hook, sd_notify, watchdog_interval
from dockd.station.status import Meters, write_status
from dockd.station.uploader import Uploader
from dockd.station.wipe import (
    WipeResult,
    interrupted_wipes,
    prune_staging,
    reopen_wiped,
    verify_sources,
    wipe_clips,
)
from dockd.storage import Backend, TokenBucket, open_backend

if TYPE_CHECKING:
    from dockd.camera.mounthelper import MountClient
    from dockd.station.heartbeat import Heartbeats
    from dockd.station.metrics import Metrics

log = structlog.get_logger("dockd.daemon")

WIPE_BATCH_S = policy.WIPE_BATCH_S  # wipe uploaded clips at least this often while others are still pending
STORAGE_PROBE_S = 30.0  # how often status checks that central storage answers
AUDIT_SIGN_S = 300.0  # sign the audit chain head this often (and at stop)
AUDIT_EXPORT_S = 60.0  # look for finished days' audit segments to upload this often


@dataclass
class CameraWork:
    docked: Docked
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future[None] | None = None
    mount: mounts.Mount | None = None
    prev: Future[None] | None = None  # an undocked worker for the same serial still winding down: start after it
    lock: threading.Lock = field(default_factory=threading.Lock)  # cancel vs. state writes
    refused: frozenset[int] = frozenset()  # clip ids the wipe gate kept back when this worker finished


class Source(Protocol):
    """Where docks come from: puts :mod:`dockd.core.events` events on the daemon's queue while started."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


def queue_path(cfg: Config) -> Path:
    return cfg.data_dir / "queue.db"


class Daemon:
    def __init__(self, cfg: Config, *, drain: bool = False, clock: Callable[[], float] = time.time,
                 sources: list[Source] | None = None, mounter: mounts.Mounter | MountClient | None = None,
                 monotonic: Callable[[], float] = time.monotonic):
        self.cfg, self.drain, self.clock = cfg, drain, clock
        self.monotonic = monotonic  # intervals of a camera worker's wipe passes (policy.WIPE_BATCH_S)
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lock = DataDirLock(cfg.data_dir)
        self.events: queue_mod.Queue = queue_mod.Queue()
        self.stop_evt = threading.Event()
        self.changed = threading.Condition()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.work: dict[str, CameraWork] = {}
        self.meters = Meters()
        self.mounter: mounts.Mounter | MountClient = mounter or mounts.Mounter(cfg.data_dir / "mnt")
        self._separate = mounter is None and sources is None  # embedded (test) use never changes privileges
        self._sources = sources
        self.retiring: dict[str, Future[None]] = {}  # serial -> future of a cancelled worker not yet finished
        self._queue: Queue | None = None  # open while run() runs
        self._helper: MountClient | None = None  # the mount helper process, when privileges were dropped
        self.backend: Backend | None = None
        self._cfg_sha256: str | None = None
        self._cfg_hashed = False

    @property
    def queue(self) -> Queue:
        """The queue; open only while :meth:`run` runs (everything that uses it runs inside it)."""
        if self._queue is None:
            raise RuntimeError("the daemon's queue is not open")
        return self._queue

    # -- life

    def run(self) -> int:
        self._config_sha256()  # read while still root: the config may be root's alone
        self._privileges = self._drop_privileges()  # before the data dir is touched: it is the daemon user's
        try:
            with self.lock:
                self._queue = Queue(queue_path(self.cfg))
                try:
                    return self._run()
                finally:
                    self._queue.close()
        finally:
            if self._helper is not None:  # the mount helper: unmounts what is left, exits
                self._helper.close()

    def _run(self) -> int:
        q = self.queue
        key, created = keys.load_or_create(self.cfg.data_dir)
        if created:
            q.record("key.created", detail={"key_id": key.key_id}, now=self.clock())
        self._record_start(key)
        if self._privileges is not None:
            self.queue.record("privileges.dropped", detail=self._privileges, now=self.clock())
        self.key = key
        # Checked beside the work, never before it: a broken chain raises an alarm, evidence keeps moving.
        chain_check = threading.Thread(target=self._check_audit_chain, name="audit-check", daemon=True)
        chain_check.start()
        mbps = self.cfg.upload.bandwidth_limit_mbps  # one limit for the whole station, shared by every upload
        limiter = TokenBucket.from_mbps(mbps) if mbps else None
        self.backend = open_backend(self.cfg.storage, limiter=limiter) if self.cfg.storage else None
        self.metrics = self._start_metrics()
        self.offloader = Offloader(self.cfg, q, key, clock=self.clock, on_progress=self.meters.offloaded,
                                   on_status=self._paused)
        self._recover()

        pool = ThreadPoolExecutor(self.cfg.offload.parallel_cameras, thread_name_prefix="camera")
        uploaders = self._start_uploaders()
        sources = self._sources if self._sources is not None else self._make_sources()
        for s in sources:
            s.start()
        sd_notify("READY=1", f"STATUS={self._status_line()}")
        log.info("dockd running", station=self.cfg.station.id, drain=self.drain, version=__version__)
        wd = watchdog_interval()
        last_tick = 0.0
        try:
            while not self.stop_evt.is_set():
                try:
                    ev = self.events.get(timeout=0.5)
                except queue_mod.Empty:
                    ev = None
                if ev is not None:
                    self._dispatch(ev, pool)
                now = time.monotonic()
                if now - last_tick >= (min(wd, 1.0) if wd else 1.0):
                    last_tick = now
                    self._tick(pool)
                    if self.drain and self._drained():
                        break
        finally:
            log.info("dockd stopping")
            for s in sources:
                s.stop()
            for w in list(self.work.values()):
                w.cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self.stop_evt.set()
            with self.changed:
                self.changed.notify_all()
            for t in uploaders:
                t.join(timeout=self.cfg.storage.timeout_s if self.cfg.storage else 5)
            for w in list(self.work.values()):
                if w.mount:
                    self.mounter.unmount(w.mount, lazy=True)
            chain_check.join()
            q.record("daemon.stopped", detail={"owner": self.owner}, now=self.clock())
            self._sign_audit_head()
            self._export_parts()  # the rows up to the stop leave now, not after a restart
            self._write_status()
            if self.metrics:
                self.metrics.stop()
        return self._exit_code()

    def _recover(self) -> None:
        """Start-up: reset interrupted copies, release every lease, note interrupted wipes, drop stale mounts,
        abort multipart uploads the queue does not know."""
        q = self.queue
        rec = self.offloader.recover()
        released = q.release_leases(now=self.clock())  # we hold the data-dir lock: every lease is stale
        wiping = interrupted_wipes(q, clock=self.clock)  # settled by their camera's next pass (docked: now)
        self.mounter.cleanup_stale()
        if rec["reset"] or released or wiping:
            log.info("recovered", reset_copies=rec["reset"], released_leases=released, interrupted_wipes=wiping)
        self._abort_orphans()

    def stop(self) -> None:
        self.stop_evt.set()

    def _record_start(self, key: keys.StationKey) -> None:
        q = self.queue
        cfg_hash = self._config_sha256()
        last = q.last_event("daemon.started")  # an index search: start-up never reads the whole log
        prev = [last] if last and isinstance(last["detail"], dict) else []  # altered row: the chain check alarms
        if prev and prev[0]["detail"].get("config_sha256") != cfg_hash:
            q.record("config.changed", detail={"from": prev[0]["detail"].get("config_sha256"), "to": cfg_hash},
                     now=self.clock())
        if prev and prev[0]["detail"].get("key_id") not in (None, key.key_id):
            q.record("key.changed", detail={"from": prev[0]["detail"].get("key_id"), "to": key.key_id},
                     now=self.clock())
        q.record("daemon.started", detail={"owner": self.owner, "version": __version__, "config": str(self.cfg.path),
                                           "config_sha256": cfg_hash, "key_id": key.key_id, "drain": self.drain},
                 now=self.clock())

    def _check_audit_chain(self) -> None:
        """Check the audit chain once at start, from its newest signed head on.

        Bounded by the rows since that head (:func:`auditlog.check_since_last_head`), so a station
        with years of log starts like a new one; ``dockd audit --verify`` checks every row. Broken:
        alarm ``audit-chain`` ("BROKEN at seq N: reason", in status and metrics) and an error log
        line; intact: the alarm is cleared. Never raises: a damaged log must not keep evidence on
        the cameras."""
        from dockd.station.auditlog import check_since_last_head
        from dockd.trust.store import known_public_keys  # heads signed before a key rotation check too

        q = self.queue
        try:
            n, bad = check_since_last_head(q, known_public_keys(self.cfg.data_dir))
            if bad is None:
                q.clear_alarm("audit-chain", now=self.clock())
                log.info("audit chain intact", rows=n)
                return
            msg = f"audit chain BROKEN at seq {bad[0]}: {bad[1]}"
        except Exception as e:  # noqa: BLE001 - a check that cannot run is itself an alarm
            msg = f"audit chain could not be checked: {type(e).__name__}: {e}"
        log.error("audit chain alarm", message=msg)
        try:
            q.raise_alarm("audit-chain", msg, now=self.clock())
        except Exception:  # noqa: BLE001
            log.exception("could not raise the audit-chain alarm")

    def _config_sha256(self) -> str | None:
        if not self._cfg_hashed:
            p = self.cfg.path
            self._cfg_sha256 = hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None
            self._cfg_hashed = True
        return self._cfg_sha256

    def _drop_privileges(self) -> dict | None:
        """Start the mount helper (if udev cameras need mounting), switch to ``[sources] user``, drop every capability.

        Runs before the daemon opens its data dir (then owned by that user) and
        before it starts any thread (capabilities belong to threads). Returns
        the ``privileges.dropped`` audit detail, recorded once the queue is open.
        """
        if not (self._separate and self.cfg.sources.drop_privileges):
            return None
        from dockd.camera import privileges
        from dockd.camera.mounthelper import MountClient

        name = self.cfg.sources.user
        user = privileges.target_user(name)
        if user is not None:
            privileges.check_owned(self.cfg.data_dir, user, name)
        helper = None
        if self.cfg.sources.udev and os.geteuid() == 0 and privileges.has(privileges.CAP_SYS_ADMIN):
            try:
                self.mounter = self._helper = helper = MountClient(self.cfg.data_dir / "mnt", config=self.cfg.path,
                                                                   owner=user)
            except (mounts.MountError, OSError) as e:  # OSError: e.g. joining the group without CAP_SETGID
                raise privileges.PrivilegeError(f"the mount helper did not start: {e}") from None
        try:
            if user is not None:
                privileges.carry_credentials()
            caps = privileges.limit_to(frozenset(), user=user)
            if user is not None and helper is not None:
                # The helper (uid 0, group ``user``'s, no CAP_DAC_*) must traverse the data dir and create
                # mount points in mnt/; sticky: the daemon cannot rename or remove what the helper made there.
                os.chmod(self.cfg.data_dir, 0o710)
                (self.cfg.data_dir / "mnt").mkdir(mode=0o700, exist_ok=True)
                os.chmod(self.cfg.data_dir / "mnt", 0o1770)
        except BaseException:
            if helper is not None:
                helper.close()
            raise
        detail = {"cap_eff": f"{caps['CapEff']:016x}", "cap_prm": f"{caps['CapPrm']:016x}",
                  "cap_bnd": f"{caps['CapBnd']:016x}", "mount_helper_pid": helper.pid if helper else None,
                  "mount_helper_cap_eff": f"{helper.caps:016x}" if helper else None,
                  "user": name if user else None, "uid": os.getuid(), "gid": os.getgid()}
        if user is None and os.getuid() == 0:
            log.warning("no such user to run as: the daemon stays uid 0, without capabilities (it can still open "
                        "root-owned files and devices)", user=name)
        log.info("privileges dropped", **detail)
        return detail

    def _start_metrics(self) -> Metrics | None:
        if not self.cfg.metrics.listen:
            return None
        from dockd.station.metrics import Metrics

        m = Metrics(self.queue, self.cfg.data_dir)
        try:
            m.serve(self.cfg.metrics.listen)
        except OSError as e:  # metrics must never stop evidence from moving
            log.error("metrics endpoint unavailable", listen=self.cfg.metrics.listen, error=str(e))
            return None
        self.meters.sink = m  # type: ignore[assignment]  # Meters.sink is annotated None in status.py (not ours)
        log.info("metrics served", url=f"http://{self.cfg.metrics.listen}/metrics")
        return m

    _last_head = 0.0
    _last_export = 0.0
    _last_index = 0.0
    _last_part: float | None = None

    def _sign_audit_head(self) -> None:
        from dockd.station.auditlog import signed_head

        try:
            signed_head(self.queue, self.key, self.cfg.station.id, self.clock())
        except Exception:  # noqa: BLE001
            log.exception("could not sign the audit head")

    def _audit_housekeeping(self) -> None:
        """Sign the chain head every AUDIT_SIGN_S; export finished days' segments and the clip index to storage."""
        now = time.monotonic()
        if now - self._last_head >= AUDIT_SIGN_S:
            self._last_head = now
            self._sign_audit_head()
        storage = self.cfg.storage
        if self.backend is not None and storage is not None \
                and now - self._last_index >= min(AUDIT_EXPORT_S, self.cfg.index.interval_s):
            self._last_index = now
            from dockd.station import clipindex

            try:  # the clip index: finished days at once, the current day every [index] interval_s
                clipindex.export(self.queue, self.backend, self.key, self.cfg.station.id, storage.prefix,
                                 self.clock(), interval_s=self.cfg.index.interval_s)
            except Exception as e:  # noqa: BLE001 - storage down: the planned segment waits for next time
                log.warning("clip index export deferred", error=str(e))
        if self.backend is not None and storage is not None and now - self._last_export >= AUDIT_EXPORT_S:
            self._last_export = now
            from dockd.station.auditlog import export_days

            try:
                export_days(self.queue, self.backend, self.key, self.cfg.station.id, storage.prefix,
                            now=self.clock())
            except Exception as e:  # noqa: BLE001 - storage down: try again next time
                log.warning("audit export deferred", error=str(e))
            if self.cfg.audit.keep_days > 0:  # one day per pass at most: bounded work per tick
                from dockd.station.retention import compact_one_day

                try:
                    compact_one_day(self.queue, self.backend, self.key, self.cfg.station.id,
                                    self.cfg.audit.keep_days, self.clock())
                except Exception:  # noqa: BLE001 - never stops the daemon; the rows stay
                    log.exception("audit compaction failed")
        part_s = self.cfg.audit.part_interval_s
        if self.backend is not None and storage is not None and part_s > 0:
            if self._last_part is None:  # the first part one interval after the start (a stop exports one)
                self._last_part = now
            elif now - self._last_part >= part_s:
                self._last_part = now
                self._export_parts()

    def _export_parts(self) -> None:
        """The current day's new audit rows as signed part segments (issue #16); after the finished days."""
        storage = self.cfg.storage
        if self.backend is None or storage is None or self.cfg.audit.part_interval_s <= 0:
            return
        if self._storage_state is not None and not self._storage_state["reachable"]:
            return  # the last probe failed: no stop (or tick) waits on storage timeouts; the next part takes the rows
        from dockd.station.auditparts import export_parts

        try:
            export_parts(self.queue, self.backend, self.key, self.cfg.station.id, storage.prefix, self.clock())
        except Exception as e:  # noqa: BLE001 - storage down: the rows wait for the next part
            log.warning("audit part export deferred", error=str(e))

    _heartbeats: Heartbeats | None = None

    def _heartbeat(self) -> None:
        """A signed heartbeat every [fleet] heartbeat_interval_s, written in its own thread (never waits)."""
        storage = self.cfg.storage
        if self.backend is None or storage is None or self.cfg.fleet.heartbeat_interval_s <= 0:
            return
        if self._heartbeats is None:
            from dockd.station.heartbeat import Heartbeats

            def figures() -> dict:
                try:
                    free = shutil.disk_usage(self.cfg.data_dir).free
                except OSError:
                    free = 0
                return {"free_bytes": free, "upload_failures": sum(self.meters.snapshot()["upload_errors"].values()),
                        "storage": self._storage_state}

            self._heartbeats = Heartbeats(queue=self.queue, backend=self.backend, key=self.key,
                                          station=self.cfg.station.id, prefix=storage.prefix,
                                          data_dir=self.cfg.data_dir,
                                          interval_s=self.cfg.fleet.heartbeat_interval_s, figures=figures,
                                          clock=self.clock)
        self._heartbeats.maybe_send()

    def _make_sources(self) -> list[Source]:
        out: list[Source] = []
        if self.cfg.sources.watch_dirs:
            from dockd.camera.sources.watchdir import WatchDirSource

            out.append(WatchDirSource(self.cfg.sources.watch_dirs, self.events,
                                      self.cfg.profile_named(self.cfg.sources.watch_profile)))
        if self.cfg.sources.udev:
            from dockd.camera.sources.udev import UdevSource

            out.append(UdevSource(self.cfg, self.events))
        return out

    def _abort_orphans(self) -> None:
        storage = self.cfg.storage
        if self.backend is None or storage is None:
            return
        try:
            from dockd.storage.base import station_prefix  # only this station's uploads: the bucket may be shared

            aborted = self.backend.abort_unknown_uploads(
                self.queue.known_upload_ids(), prefix=station_prefix(storage.prefix, self.cfg.station.id))
            if aborted:
                self.queue.record("upload.orphans_aborted", detail={"upload_ids": aborted}, now=self.clock())
        except Exception as e:  # noqa: BLE001 - storage may be down at start; uploads retry later
            log.warning("could not list multipart uploads at start", error=str(e))

    # -- events

    def _dispatch(self, ev: object, pool: ThreadPoolExecutor) -> None:
        if isinstance(ev, Rejected):
            log.warning("device rejected", what=ev.what, reason=ev.reason)
            self.queue.record("device.rejected", detail={"what": ev.what, "reason": ev.reason}, now=self.clock())
        elif isinstance(ev, Docked):
            serial = ev.camera.serial
            w = self.work.get(serial)
            if w and not (w.future and w.future.done()):
                if ev.devnode and w.docked.devnode and ev.devnode != w.docked.devnode:
                    # Two devices claiming one serial: keep the first, never mix their clips.
                    reason = f"serial {serial} is already docked as {w.docked.devnode}"
                    log.warning("device rejected", what=ev.devnode, reason=reason)
                    self.queue.record("device.rejected", camera=serial,
                                      detail={"what": ev.devnode, "reason": reason}, now=self.clock())
                return  # already being handled (cold plug and event raced)
            w = CameraWork(ev)
            prev = self.retiring.pop(serial, None)
            if prev is not None and not prev.done():
                w.prev = prev
            self.work[serial] = w
            self.meters.reset_camera(serial)
            self.queue.dock_camera(serial, source=ev.camera.source, vendor=ev.camera.vendor, model=ev.camera.model,
                                   profile=ev.camera.profile, bay=ev.camera.bay, now=self.clock(),
                                   record=False)  # camera.docked: with the dock's facts, by the worker
            self._hook(serial, CameraState.DOCKED)
            w.future = pool.submit(self._camera_guarded, w)
        elif isinstance(ev, Undocked):
            w = self.work.get(ev.serial)
            if w is not None and ev.devnode and w.docked.devnode and ev.devnode != w.docked.devnode:
                log.info("ignoring removal of another device with this serial", camera=ev.serial,
                         devnode=ev.devnode, docked_as=w.docked.devnode)
                return
            self.work.pop(ev.serial, None)
            if w is None and not (ev.serial and self.queue.camera(ev.serial)):
                return
            if w is not None:
                with w.lock:  # no state write from the worker after this
                    w.cancel.set()
                if w.future is not None and not w.future.done():
                    self.retiring[ev.serial] = w.future
                if w.mount:
                    self.mounter.unmount(w.mount, lazy=True)
            if ev.serial and self.queue.camera(ev.serial):
                if self.queue.set_camera_state(ev.serial, CameraState.UNDOCKED, docked=False, now=self.clock()):
                    self._hook(ev.serial, CameraState.UNDOCKED)
            log.info("camera undocked", camera=ev.serial)

    def _tick(self, pool: ThreadPoolExecutor) -> None:
        q = self.queue
        expired = q.release_leases(expired_before=self.clock(), now=self.clock())
        if expired:
            self._notify()
        prune_staging(self.cfg, q, now=self.clock())
        self._audit_housekeeping()
        self._heartbeat()
        # A docked camera whose worker finished gets a new one when there is
        # work again (a replayed clip was uploaded and can now be wiped).
        for serial, w in list(self.work.items()):
            if w.future is not None and w.future.done() and not w.cancel.is_set():
                uploaded = {c.id for c in q.clips(camera=serial, state=ClipState.UPLOADED)}
                wiping = {c.id for c in q.clips(camera=serial, state=ClipState.WIPING)}
                if policy.needs_new_worker(uploaded, wiping, w.refused, storage_configured=self.cfg.storage is not None,
                                           wipe_mode=self.cfg.offload.wipe):
                    w2 = CameraWork(w.docked)
                    self.work[serial] = w2
                    w2.future = pool.submit(self._camera_guarded, w2)
        self._probe_storage()
        line = self._status_line()  # once per tick: the status file and systemd get the same line
        self._write_status(line)
        sd_notify("WATCHDOG=1", f"STATUS={line}")

    def _drained(self) -> bool:
        if not self.events.empty():
            return False
        if any(w.future is not None and not w.future.done() for w in self.work.values()):
            return False
        return not policy.is_pending(self.queue.counts(), storage_configured=self.cfg.storage is not None)

    def _exit_code(self) -> int:
        c = self.queue.counts()
        bad = c[ClipState.FAILED] or c[ClipState.QUARANTINED]
        bad = bad or any(cam.state in (CameraState.ERROR, CameraState.ATTENTION) for cam in self.queue.cameras()
                         if cam.docked)
        return 1 if bad else 0

    # -- cameras

    def _set_state(self, serial: str, state: CameraState, reason: str | None = None) -> None:
        if self.queue.set_camera_state(serial, state, reason, now=self.clock()):
            log.info("camera state", camera=serial, state=str(state), reason=reason)
            self._hook(serial, state)

    def _hook(self, serial: str, state: CameraState) -> None:
        cam = self.queue.camera(serial)
        run_hook(self.cfg.hooks.on_state, self.cfg.hooks.timeout_s, (cam.bay if cam else None) or "-", serial,
                 str(state))

    def _paused(self, serial: str, reason: str | None) -> None:
        self._set_state(serial, CameraState.OFFLOADING, reason)

    def _work_state(self, w: CameraWork, state: CameraState, reason: str | None = None) -> None:
        """A worker's state write; once the camera is undocked (cancelled) it raises Cancelled instead."""
        with w.lock:
            if w.cancel.is_set():
                raise Cancelled()
            self._set_state(w.docked.camera.serial, state, reason)

    def _camera_guarded(self, w: CameraWork) -> None:
        serial = w.docked.camera.serial
        try:
            if w.prev is not None:  # the previous dock's worker must let go of the clips and mount point first
                try:
                    w.prev.exception()
                except BaseException:  # noqa: BLE001 - only its end matters here
                    pass
                w.prev = None
            self._camera(w)
        except Cancelled:
            log.info("camera work stopped", camera=serial)
        except Exception as e:  # noqa: BLE001 - one camera's failure never stops the daemon
            log.exception("camera work failed", camera=serial)
            try:
                self._work_state(w, CameraState.ERROR, f"{type(e).__name__}: {e}")
            except Cancelled:
                pass
        finally:
            self._dock_recorded(w)
            if w.mount and (w.cancel.is_set() or self.stop_evt.is_set() or self.work.get(serial) is not w):
                self.mounter.unmount(w.mount, lazy=True)
                w.mount = None

    def _dock_recorded(self, w: CameraWork) -> None:
        """Every dock gets its ``camera.docked`` event: the offloader records it with the card's facts; a
        worker that ended before reading the card (mount failed, undocked, stopped) records it bare."""
        from dockd.station.dockfacts import record_bare_dock

        try:
            record_bare_dock(self.cfg, self.queue, w.docked.camera, now=self.clock())
        except Exception:  # noqa: BLE001 - the record of a dock never stops the daemon
            log.exception("could not record the dock", camera=w.docked.camera.serial)

    def _camera(self, w: CameraWork) -> None:
        ev, cam = w.docked, w.docked.camera
        serial = cam.serial
        if not valid_serial(serial):
            raise ValueError(f"unsafe serial {serial!r}")
        if ev.root is not None:
            root = ev.root
            if w.cancel.wait(0.5):  # let an automounter or copy finish settling the directory
                raise Cancelled()
        else:
            try:
                w.mount = self.mounter.mount(serial, ev.devnode, ev.fs_type, cam.filesystems)
            except mounts.MountError as e:
                self.queue.record("camera.mount_failed", camera=serial, detail={"reason": str(e)}, now=self.clock())
                self._work_state(w, CameraState.ERROR, f"mount failed: {e}")
                return
            root = w.mount.path
        self._work_state(w, CameraState.OFFLOADING)
        summary = self.offloader.offload(cam, root, w.cancel)
        log.info("offload done", camera=serial, staged=summary.staged, already=summary.already,
                 skipped=len(summary.skipped), bytes=summary.bytes, seconds=round(summary.seconds, 2))
        self._notify()
        refused = False  # the last wipe pass kept clips back: retry only every WIPE_BATCH_S, never spin
        # Wipes interrupted by a crash or undock, and clips recorded wiped that this dock's scan found
        # still on the camera, are settled first: until then the camera is `wiping`, never `ready`.
        reopen_wiped(self.queue, summary.wiped_present, clock=self.clock)
        # Verify sources ahead of their wipes (wipe_check = "hash"): each clip at most once per worker
        # (one whose re-read could not be done is not recorded: the gate reads it itself), and never
        # one the gate just read and refused.
        ahead = self.cfg.offload.wipe_check == "hash" and policy.wipe_enabled(
            storage_configured=self.cfg.storage is not None, wipe_mode=self.cfg.offload.wipe)
        tried: set[int] = set()
        cam_row = self.queue.camera(serial)
        dock_t = cam_row.docked_at if cam_row is not None and cam_row.docked_at is not None else self.clock()
        if self.queue.clips(camera=serial, state=ClipState.WIPING):
            res = self._wipe(w, root, [ClipState.WIPING])  # what it refuses is uploaded again: the policy decides
            tried.update(cid for cid, _ in res.refused)
        last_wipe = self.monotonic()
        while not w.cancel.is_set() and not self.stop_evt.is_set():
            since = self.monotonic() - last_wipe
            v = policy.camera_verdict(self.queue.camera_counts(serial), serial=serial, aborted=summary.aborted,
                                      refused=refused, since_wipe=since,
                                      storage_configured=self.cfg.storage is not None,
                                      wipe_mode=self.cfg.offload.wipe)
            proven: list[Clip] = []
            if ahead:
                todo = [cid for cid in sourcechecks.unverified(self.queue, serial, dock_t) if cid not in tried]
                proven = sourcechecks.proven_uploaded(self.queue, serial, dock_t)
                v = policy.shift_verdict(v, to_verify=len(todo), proven=len(proven), refused=refused,
                                         since_wipe=since)
                if v.step is policy.Step.VERIFY:
                    if v.state is not None:
                        self._work_state(w, v.state, v.reason)
                    tried.add(todo[0])
                    self._verify(w, root, todo[0])
                    continue
            if v.step is policy.Step.WIPE:
                res = self._wipe(w, root, only=proven if v.only_proven else None)
                tried.update(cid for cid, _ in res.refused)
                refused = bool(res.refused)
                w.refused = frozenset(cid for cid, _ in res.refused)
                last_wipe = self.monotonic()
                v = policy.after_wipe(v, [why for _, why in res.refused]) or v
                if v.step is policy.Step.WIPE:
                    continue
            assert v.state is not None
            if v.step is policy.Step.FINISH:
                self._finish(w, v.state, v.reason)
                break
            self._work_state(w, v.state, v.reason)
            with self.changed:
                self.changed.wait(timeout=1.0)
        if w.mount:
            self.mounter.unmount(w.mount)
            w.mount = None

    def _finish(self, w: CameraWork, state: CameraState, reason: str | None) -> None:
        if w.mount:  # release the device (synced) before telling anyone it may be taken
            self.mounter.unmount(w.mount)
            w.mount = None
        self._work_state(w, state, reason)

    def _verify(self, w: CameraWork, root: Path, clip_id: int) -> None:
        """Re-read one clip's source on the camera and record what it found (see :func:`verify_sources`)."""
        if w.cancel.is_set():
            raise Cancelled()
        clip = self.queue.clip(clip_id)
        if w.mount is not None:
            root = w.mount.path
        with Volume(root) as vol:
            why = verify_sources(self.queue, vol, clip, w.cancel, clock=self.clock)  # cancel: undock, stop
        if why:
            log.warning("source not verified ahead of its wipe", camera=clip.camera, clip=clip.id, reason=why)

    def _wipe(self, w: CameraWork, root: Path, states: list[str] | None = None,
              only: list[Clip] | None = None) -> WipeResult:
        """A wipe pass over the camera's uploaded and wiping clips (``states``), or over ``only``: the
        proven clips wiped while uploads still run, a pass that leaves the camera's state as it is
        (it is not ready, and its on_state hook is not called every few seconds)."""
        serial = w.docked.camera.serial
        if only is None:
            self._work_state(w, CameraState.WIPING)
        elif w.cancel.is_set():
            raise Cancelled()
        clips = only if only is not None else self.queue.clips(camera=serial,
                                                               state=states or [ClipState.UPLOADED, ClipState.WIPING])
        if w.mount is not None:
            self.mounter.remount_rw(w.mount)
            root = w.mount.path
        try:
            with Volume(root) as vol:
                res = wipe_clips(self.cfg, self.queue, vol, clips, lock_ok=self._lock_ok, clock=self.clock)
        finally:
            if w.mount is not None:
                self.mounter.remount_ro(w.mount)
        self.meters.wiped(len(res.wiped))
        if res.refused:
            log.warning("some clips were not wiped", camera=serial, refused=len(res.refused))
        return res

    _lock_cache: tuple[float, bool] = (0.0, False)

    def _lock_ok(self) -> bool:
        t, ok = self._lock_cache
        if time.monotonic() - t > 60:
            try:
                ok = bool(self.backend and self.backend.lock_enforced())
            except Exception:  # noqa: BLE001
                ok = False
            self._lock_cache = (time.monotonic(), ok)
        return ok

    # -- uploads

    def _start_uploaders(self) -> list[threading.Thread]:
        if self.backend is None or self.cfg.storage is None:
            return []
        up = Uploader(self.cfg, self.queue, self.backend, owner=self.owner, clock=self.clock,
                      on_progress=self.meters.uploaded, on_error=self.meters.upload_error)
        self.uploader = up
        threads = []
        for i in range(self.cfg.storage.concurrency):
            t = threading.Thread(target=self._upload_loop, args=(up,), name=f"upload-{i}", daemon=True)
            t.start()
            threads.append(t)
        return threads

    def _upload_loop(self, up: Uploader) -> None:
        while not self.stop_evt.is_set():
            try:
                clip = up.run_once()
            except Exception:  # noqa: BLE001 - keep the worker alive; the lease expires and it is retried
                log.exception("upload worker error")
                clip = None
                self.stop_evt.wait(5)
            if clip is not None:
                self.meters.attempt()
                self._notify()
                continue
            with self.changed:
                self.changed.wait(timeout=1.0)

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    # -- status

    _storage_state: dict | None = None
    _last_probe = 0.0
    _probing = False

    def _probe_storage(self) -> None:
        """Check storage reachability every STORAGE_PROBE_S in the background (for status and metrics)."""
        backend = self.backend
        if backend is None or self._probing or time.monotonic() - self._last_probe < STORAGE_PROBE_S:
            return
        self._last_probe = time.monotonic()
        self._probing = True

        def probe() -> None:
            try:
                backend.check()
                self._storage_state = {"reachable": True, "checked_at": self.clock(), "error": None}
            except Exception as e:  # noqa: BLE001 - reported, never raised
                self._storage_state = {"reachable": False, "checked_at": self.clock(), "error": str(e)}
            finally:
                metrics = getattr(self, "metrics", None)  # set in _run; None when the endpoint is off
                if metrics is not None and self._storage_state is not None:
                    metrics.storage_reachable = bool(self._storage_state["reachable"])
                self._probing = False

        threading.Thread(target=probe, name="storage-probe", daemon=True).start()

    def _status_line(self) -> str:
        c = self.queue.counts()
        docked = sum(1 for cam in self.queue.cameras() if cam.docked)
        to_wipe = c["uploaded"] + c["wiping"]
        return (f"{docked} docked; {c['staged'] + c['uploading']} to upload, {to_wipe} to wipe, "
                f"{c['failed']} failed, {c['quarantined']} quarantined")

    def _write_status(self, line: str | None = None) -> None:
        try:
            write_status(self.cfg.data_dir, {
                "pid": os.getpid(), "owner": self.owner, "updated": self.clock(),
                "meters": self.meters.snapshot(), "status": self._status_line() if line is None else line,
                "storage": self._storage_state,
            })
        except OSError as e:
            log.warning("cannot write status file", error=str(e))
