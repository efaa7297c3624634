"""The uploader: turns ``staged`` clips into ``uploaded`` ones, or says exactly why not.

Policy lives here; transport and error translation live in the backend.
For each claimed clip (a lease in the queue, renewed while the upload runs):

* HEAD first (:meth:`Backend.find`): an object with our size and checksum
  already there is success (replays and restarts never upload twice; audit
  ``upload.already_present``); a different object under our content-addressed
  key is a conflict: quarantine and alarm, never overwrite. The one exception
  is a single-PUT clip's first attempt on a backend whose writes are
  conditional (``[storage] conditional_writes``): its PUT goes first, a taken
  key refuses it, and the HEAD that proves every upload compares what is there.
* Upload clip, sidecars, then the signed manifest, each verified by the
  backend (checksum sent; checksum read back, or echoed by the server for the
  manifest). A multipart upload's id and parts are kept in the queue ledger,
  so a restart resumes it; once the clip is settled, unknown multipart uploads
  of its key are aborted.
* With Object Lock configured, an object already present gets the retention
  it lacks; an object the bucket could not retain raises the ``object-lock``
  alarm (the wipe gate then keeps the clip on the camera).
* Outcome by error class: transient -> back to ``staged`` with
  ``next_attempt_at`` from exponential backoff with full jitter (tenacity's
  ``wait_random_exponential``) until ``max_attempts``, then ``failed``;
  permanent -> ``failed`` with the reason; clock skew -> alarm and a long
  wait without spending attempts; bad digest -> re-hash the staged copy:
  corrupt -> ``quarantined``, intact -> retry once, again -> ``failed``.

``[upload] bandwidth_limit_mbps`` becomes one token bucket shared by every
upload thread of the station (set on the backend here).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import structlog
from tenacity import RetryCallState, wait_random_exponential

from dockd.config import Config
from dockd.core import naming
from dockd.core.lifecycle import ClipEvent, ClipState
from dockd.core.outcomes import AttemptError
from dockd.evidence import durable
from dockd.evidence import manifest as mf
from dockd.queue.records import Clip
from dockd.queue.store import Queue
from dockd.storage.base import Backend, ErrorClass, RemoteObject, StoreFailure, TokenBucket

log = structlog.get_logger("dockd.upload")


@dataclass
class _Attempt:
    attempt_number: int


def backoff_s(attempt: int, initial: float, maximum: float) -> float:
    """Full-jitter exponential backoff: uniform(0, min(max, initial * 2**(attempt-1)))."""
    # the wait strategy reads only attempt_number of its RetryCallState
    return wait_random_exponential(multiplier=initial, max=maximum)(cast(RetryCallState, _Attempt(attempt)))


def _first_attempt(clip: Clip) -> bool:
    """True for a clip never tried before: no failed attempt, no error (released leases and
    replays leave one), no multipart upload in the ledger."""
    return clip.attempts == 0 and clip.last_error is None and clip.upload_id is None


class QueueLedger:
    """The multipart ledger of one clip, kept in the queue."""

    def __init__(self, queue: Queue, clip: Clip, clock: Callable[[], float] = time.time):
        self.queue, self.clip_id, self.upload_id = queue, clip.id, clip.upload_id
        self.camera, self.clock = clip.camera, clock

    def begin(self, upload_id: str) -> None:
        self.upload_id = upload_id
        self.queue.clear_parts(self.clip_id)
        self.queue.update_clip(self.clip_id, upload_id=upload_id)
        self.queue.record("upload.multipart_started", camera=self.camera, clip=self.clip_id,
                          detail={"upload_id": upload_id}, now=self.clock())

    def done_parts(self) -> dict[int, tuple[int, str, str]]:
        return {p["part_number"]: (p["size"], p["sha256_b64"], p["etag"])
                for p in self.queue.parts(self.clip_id, self.upload_id or "")}

    def record(self, number: int, size: int, sha256_b64: str, etag: str) -> None:
        self.queue.record_part(self.clip_id, self.upload_id or "", number, size, sha256_b64, etag)

    def finish(self) -> None:
        self.queue.update_clip(self.clip_id, upload_id=None)
        self.queue.clear_parts(self.clip_id)
        self.upload_id = None


class Uploader:
    def __init__(self, cfg: Config, queue: Queue, backend: Backend, *, owner: str,
                 clock: Callable[[], float] = time.time,
                 on_progress: Callable[[str, int], None] | None = None,
                 on_error: Callable[[str], None] | None = None):
        self.cfg, self.queue, self.backend, self.owner, self.clock = cfg, queue, backend, owner, clock
        self.on_progress = on_progress
        self.on_error = on_error  # error class name, for metrics
        self.lease_s = cfg.upload.lease_s
        if cfg.upload.bandwidth_limit_mbps and backend.limiter is None:  # opened without the station's limit
            backend.limiter = TokenBucket.from_mbps(cfg.upload.bandwidth_limit_mbps)

    @property
    def lock_wanted(self) -> bool:
        s = self.cfg.storage
        return bool(s and (s.object_lock_days or s.legal_hold))

    # -- one step

    def run_once(self) -> Clip | None:
        """Claim one due clip and settle it; return the clip as it ended, or None if nothing was due."""
        clip = self.queue.claim_upload(self.owner, lease_s=self.lease_s, now=self.clock())
        if clip is None:
            return None
        return self.settle(clip)

    def settle(self, clip: Clip) -> Clip:
        blog = log.bind(clip=clip.id, camera=clip.camera)
        try:
            with self._lease(clip):
                obj, present = self._upload(clip)
        except StoreFailure as e:
            if self.on_error:
                self.on_error(str(e.cls))
            return self._failed_attempt(clip, e, blog)
        except OSError as e:  # staged copy unreadable: local problem, not the network
            err = StoreFailure(ErrorClass.BAD_DIGEST, f"staged copy unreadable: {e.strerror or e}", "LocalRead")
            return self._failed_attempt(clip, err, blog)
        self._tidy(clip, blog)
        now = self.clock()
        self.queue.clear_alarm("storage", now=now)
        self.queue.clear_alarm("clock", now=now)
        detail = {"object_key": clip.object_key, "sha256": clip.sha256, "size": clip.size,
                  "backend": self.backend.name, "already_present": present,
                  "checksum": obj.sha256 or obj.composite}
        if obj.version_id:
            detail["version_id"] = obj.version_id
        if obj.retain_until is not None:
            detail["retain_until"] = obj.retain_until.isoformat()
            detail["lock_mode"] = obj.lock_mode
        if obj.legal_hold:
            detail["legal_hold"] = True
        if self.lock_wanted and not self._retained(obj):
            self.queue.raise_alarm("object-lock", f"Object Lock is configured but {clip.object_key} is not "
                                                  f"retained: the bucket does not enforce Object Lock; clips "
                                                  f"stay on the cameras", now=now)
        done = self.queue.transition(clip.id, ClipEvent.UPLOADED, expect=ClipState.UPLOADING, now=now,
                                     last_error=None, next_attempt_at=None, detail=detail)
        blog.info("uploaded", object_key=clip.object_key, sha256=clip.sha256, already_present=present)
        return done

    def _retained(self, obj: RemoteObject) -> bool:
        s = self.cfg.storage
        assert s is not None
        if s.object_lock_days and (obj.retain_until is None or obj.lock_mode not in (None, "COMPLIANCE")):
            return False
        return not (s.legal_hold and not obj.legal_hold)

    def _upload(self, clip: Clip) -> tuple[RemoteObject, bool]:
        assert clip.sha256 and clip.object_key and clip.manifest
        report = self.on_progress
        progress = (lambda n: report(clip.camera, n)) if report else None
        staged = Path(clip.staged_path) if clip.staged_path else None
        found = None
        if not (_first_attempt(clip) and self.backend.conditional_writes
                and not self.backend.multipart_for(clip.size)):
            # A retry, resume or replay may find its own earlier upload, and a
            # big clip's parts are worth a HEAD to save: look first.
            found = self.backend.find(clip.object_key, clip.size, clip.sha256, staged)  # CONFLICT if different
            if found is not None and progress:
                progress(clip.size)
        if found is not None:
            obj = found
        else:
            if staged is None:
                raise StoreFailure(ErrorClass.BAD_DIGEST, "staged copy unreadable: no staged copy recorded",
                                   "LocalRead")
            # Never overwrites: a taken key is refused, then compared (CONFLICT if different).
            obj = self.backend.put_file(clip.object_key, staged, clip.size, clip.sha256,
                                        QueueLedger(self.queue, clip, self.clock), progress)
        present = found is not None or obj.already_present
        if present:
            self.queue.record("upload.already_present", camera=clip.camera, clip=clip.id,
                              detail={"object_key": clip.object_key, "checksum": obj.sha256 or obj.composite},
                              now=self.clock())
        if self.lock_wanted:
            obj = self.backend.ensure_lock(obj)
        m = json.loads(clip.manifest)
        for sc in self.queue.sidecars(clip.id):
            key = naming.sidecar_key(clip.object_key, sc["sha256"], sc["path"])
            if self.backend.find(key, sc["size"], sc["sha256"], None) is None:
                if not sc["staged_path"]:
                    raise StoreFailure(ErrorClass.BAD_DIGEST, f"staged copy unreadable: sidecar {sc['path']!r} "
                                                              f"has no staged copy", "LocalRead")
                self.backend.put_file(key, Path(sc["staged_path"]), sc["size"], sc["sha256"], None, None)
        body = mf.dumps(m)
        digest = hashlib.sha256(body).hexdigest()
        mkey = naming.manifest_key(clip.object_key)
        try:
            self.backend.put_bytes(mkey, body, digest)
        except StoreFailure as e:
            if e.cls is not ErrorClass.CONFLICT:
                raise
            # The same bytes were offloaded twice from this camera on this day
            # (same content-addressed key): the first clip's manifest is already
            # there. This clip's manifest goes beside it under its own digest.
            mkey = naming.manifest_key(clip.object_key, digest)
            self.backend.put_bytes(mkey, body, digest)
            self.queue.record("upload.duplicate_content", camera=clip.camera, clip=clip.id,
                              detail={"object_key": clip.object_key, "manifest_key": mkey}, now=self.clock())
        return obj, present

    def _tidy(self, clip: Clip, blog) -> None:
        """After the key is settled: no multipart upload of it may linger (best effort).

        A clip sent by one PUT on its first attempt never started one, so there is
        nothing to look for (start-up still sweeps the whole prefix)."""
        if _first_attempt(clip) and not self.backend.multipart_for(clip.size):
            return  # (a first attempt starts with no upload id, and a single PUT never takes one)
        cur = self.queue.clip(clip.id)
        try:
            if cur.upload_id and clip.object_key:
                self.backend.abort(clip.object_key, cur.upload_id)
            aborted = self.backend.abort_unknown_uploads(self.queue.known_upload_ids() - {cur.upload_id},
                                                         key=clip.object_key)
        except StoreFailure as e:
            blog.warning("could not clean up multipart uploads of this key; start-up will", error=str(e))
            return
        finally:
            if cur.upload_id:
                QueueLedger(self.queue, cur, self.clock).finish()
        if aborted:
            self.queue.record("upload.orphans_aborted", camera=clip.camera, clip=clip.id,
                              detail={"object_key": clip.object_key, "upload_ids": aborted}, now=self.clock())

    def _quarantine(self, clip: Clip, blog, **kw) -> Clip:
        cur = self.queue.clip(clip.id)
        if cur.upload_id and clip.object_key:
            try:
                self.backend.abort(clip.object_key, cur.upload_id)
                QueueLedger(self.queue, cur, self.clock).finish()
            except StoreFailure as e:
                blog.warning("could not abort the multipart upload of a quarantined clip", error=str(e))
        return self.queue.transition(clip.id, ClipEvent.QUARANTINE, **kw)

    def _failed_attempt(self, clip: Clip, e: StoreFailure, blog) -> Clip:
        now = self.clock()
        up = self.cfg.upload
        msg = AttemptError(e.cls, str(e)).text()
        detail: dict[str, Any] = {"error_class": str(e.cls), "code": e.code, "error": str(e)}
        if e.cls is ErrorClass.CONFLICT:
            self.queue.raise_alarm("conflict", f"clip {clip.id}: {e}", now=now)
            blog.error("quarantined: storage holds different content under this key", error=str(e))
            return self._quarantine(clip, blog, now=now, last_error=msg, detail=detail)
        if e.cls is ErrorClass.BAD_DIGEST:
            staged = clip.staged_path
            got, n = durable.sha256_file(staged, uncached=True) if staged and Path(staged).exists() \
                else ("missing", 0)
            if got != clip.sha256 or n != clip.size:
                detail.update(recorded_sha256=clip.sha256, staged_sha256=got)
                blog.error("quarantined: staged copy is corrupt", recorded=clip.sha256, staged=got)
                return self._quarantine(clip, blog, now=now, detail=detail,
                                        last_error=f"staged copy corrupt: {got} != {clip.sha256}")
            previous = AttemptError.parse(clip.last_error)
            if previous is not None and previous.cls is ErrorClass.BAD_DIGEST:
                blog.error("failed: storage rejected the checksum twice", error=str(e))
                return self.queue.transition(clip.id, ClipEvent.UPLOAD_FAILED, now=now, last_error=msg,
                                             attempts=clip.attempts + 1, detail=detail)
        if e.cls is ErrorClass.PERMANENT:
            self.queue.raise_alarm("storage", str(e), now=now)
            blog.error("failed: storage refused", error=str(e))
            return self.queue.transition(clip.id, ClipEvent.UPLOAD_FAILED, now=now, last_error=msg,
                                         attempts=clip.attempts + 1, detail=detail)
        if e.cls is ErrorClass.CLOCK:
            self.queue.raise_alarm("clock", f"storage says the station clock is wrong: {e}", now=now)
            nxt = now + up.backoff_max_s
            blog.error("clock skew: waiting for the clock to be fixed", error=str(e))
            return self.queue.transition(clip.id, ClipEvent.UPLOAD_RETRY, now=now, last_error=msg,
                                         next_attempt_at=nxt, detail=dict(detail, next_attempt_in_s=up.backoff_max_s))
        attempts = clip.attempts + 1
        if attempts >= up.max_attempts:
            blog.error("failed: attempts exhausted", attempts=attempts, error=str(e))
            return self.queue.transition(clip.id, ClipEvent.UPLOAD_FAILED, now=now, last_error=msg,
                                         attempts=attempts, detail=dict(detail, attempts=attempts))
        wait = backoff_s(attempts, up.backoff_initial_s, up.backoff_max_s)
        blog.warning("upload attempt failed; will retry", attempts=attempts, retry_in_s=round(wait, 2), error=str(e))
        return self.queue.transition(clip.id, ClipEvent.UPLOAD_RETRY, now=now, last_error=msg, attempts=attempts,
                                     next_attempt_at=now + wait,
                                     detail=dict(detail, attempts=attempts, retry_in_s=round(wait, 3)))

    @contextmanager
    def _lease(self, clip: Clip):
        """Keep the clip's lease alive while its upload runs."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_s / 3):
                try:
                    self.queue.renew_lease(clip.id, self.owner, lease_s=self.lease_s, now=self.clock())
                except Exception as e:  # noqa: BLE001 - try again next period; never kill the upload
                    log.warning("lease renewal failed", clip=clip.id, error=str(e))

        t = threading.Thread(target=renew, name=f"lease-{clip.id}", daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()

