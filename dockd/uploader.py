"""The uploader: turns ``staged`` clips into ``uploaded`` ones, or says exactly why not.

Policy lives here; transport and error translation live in the backend.
For each claimed clip (a lease in the queue, renewed while the upload runs):

* HEAD first: an object with our size and checksum already there is success
  (replays and restarts never upload twice); a different object under our
  content-addressed key is a conflict: quarantine and alarm, never overwrite.
* Upload clip, sidecars, then the signed manifest, each verified by the
  backend (checksum sent, checksum read back).
* Outcome by error class: transient -> back to ``staged`` with
  ``next_attempt_at`` from exponential backoff with full jitter (tenacity's
  ``wait_random_exponential``) until ``max_attempts``, then ``failed``;
  permanent -> ``failed`` with the reason; clock skew -> alarm and a long
  wait without spending attempts; bad digest -> re-hash the staged copy:
  corrupt -> ``quarantined``, intact -> retry once, again -> ``failed``.
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

import structlog
from tenacity import wait_random_exponential

from . import durable
from . import manifest as mf
from .config import Config
from .lifecycle import ClipEvent, ClipState
from .queue import Clip, Queue
from .storage.base import Backend, ErrorClass, StoreFailure, object_key

log = structlog.get_logger("dockd.upload")


@dataclass
class _Attempt:
    attempt_number: int


def backoff_s(attempt: int, initial: float, maximum: float) -> float:
    """Full-jitter exponential backoff: uniform(0, min(max, initial * 2**(attempt-1)))."""
    return wait_random_exponential(multiplier=initial, max=maximum)(_Attempt(attempt))


class QueueLedger:
    """The multipart ledger of one clip, kept in the queue."""

    def __init__(self, queue: Queue, clip: Clip):
        self.queue, self.clip_id, self.upload_id = queue, clip.id, clip.upload_id

    def begin(self, upload_id: str) -> None:
        self.upload_id = upload_id
        self.queue.clear_parts(self.clip_id)
        self.queue.update_clip(self.clip_id, upload_id=upload_id)
        self.queue.record("upload.multipart_started", clip=self.clip_id, detail={"upload_id": upload_id})

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
                self._upload(clip)
        except StoreFailure as e:
            if self.on_error:
                self.on_error(str(e.cls))
            return self._failed_attempt(clip, e, blog)
        except OSError as e:  # staged copy unreadable: local problem, not the network
            err = StoreFailure(ErrorClass.BAD_DIGEST, f"staged copy unreadable: {e.strerror or e}", "LocalRead")
            return self._failed_attempt(clip, err, blog)
        self.queue.clear_alarm("storage", now=self.clock())
        self.queue.clear_alarm("clock", now=self.clock())
        done = self.queue.transition(clip.id, ClipEvent.UPLOADED, expect=ClipState.UPLOADING, now=self.clock(),
                                     last_error=None, next_attempt_at=None,
                                     detail={"object_key": clip.object_key, "sha256": clip.sha256,
                                             "size": clip.size, "backend": self.backend.name})
        blog.info("uploaded", object_key=clip.object_key, sha256=clip.sha256)
        return done

    def _upload(self, clip: Clip) -> None:
        assert clip.sha256 and clip.staged_path and clip.object_key and clip.manifest
        progress = (lambda n: self.on_progress(clip.camera, n)) if self.on_progress else None
        existing = self.backend.head(clip.object_key)
        if existing is not None and existing.size == clip.size and existing.sha256 == clip.sha256:
            self.queue.record("upload.already_present", camera=clip.camera, clip=clip.id,
                              detail={"object_key": clip.object_key}, now=self.clock())
            if progress:
                progress(clip.size)
        elif existing is not None and existing.sha256 is not None:
            raise StoreFailure(ErrorClass.CONFLICT, f"{clip.object_key} exists with different content "
                                                    f"(sha256 {existing.sha256}, {existing.size} bytes)", "Conflict")
        else:
            self.backend.put_file(clip.object_key, Path(clip.staged_path), clip.size, clip.sha256,
                                  QueueLedger(self.queue, clip), progress)
        m = json.loads(clip.manifest)
        base = clip.object_key.rsplit("/", 1)[0]
        for sc in self.queue.sidecars(clip.id):
            ext = Path(sc["path"]).suffix.lower() if len(Path(sc["path"]).suffix) <= 9 else ""
            ext = ext if ext[1:].isalnum() else ""
            key = f"{base}/{sc['sha256']}{ext}"
            have = self.backend.head(key)
            if not (have and have.size == sc["size"] and have.sha256 == sc["sha256"]):
                self.backend.put_file(key, Path(sc["staged_path"]), sc["size"], sc["sha256"], None, None)
        body = mf.dumps(m)
        digest = hashlib.sha256(body).hexdigest()
        mkey = clip.object_key + ".manifest.json"
        try:
            self.backend.put_bytes(mkey, body, digest)
        except StoreFailure as e:
            if e.cls is not ErrorClass.CONFLICT:
                raise
            # The same bytes were offloaded twice from this camera on this day
            # (same content-addressed key): the first clip's manifest is already
            # there. This clip's manifest goes beside it under its own digest.
            mkey = f"{clip.object_key}.{digest[:16]}.manifest.json"
            self.backend.put_bytes(mkey, body, digest)
            self.queue.record("upload.duplicate_content", camera=clip.camera, clip=clip.id,
                              detail={"object_key": clip.object_key, "manifest_key": mkey}, now=self.clock())

    def _failed_attempt(self, clip: Clip, e: StoreFailure, blog) -> Clip:
        now = self.clock()
        up = self.cfg.upload
        msg = f"{e.cls}: {e}"
        detail = {"error_class": str(e.cls), "code": e.code, "error": str(e)}
        if e.cls is ErrorClass.CONFLICT:
            self.queue.raise_alarm("conflict", f"clip {clip.id}: {e}", now=now)
            blog.error("quarantined: storage holds different content under this key", error=str(e))
            return self.queue.transition(clip.id, ClipEvent.QUARANTINE, now=now, last_error=msg, detail=detail)
        if e.cls is ErrorClass.BAD_DIGEST:
            got, n = durable.sha256_file(clip.staged_path, uncached=True) if Path(clip.staged_path).exists() \
                else ("missing", 0)
            if got != clip.sha256 or n != clip.size:
                detail.update(recorded_sha256=clip.sha256, staged_sha256=got)
                blog.error("quarantined: staged copy is corrupt", recorded=clip.sha256, staged=got)
                return self.queue.transition(clip.id, ClipEvent.QUARANTINE, now=now, detail=detail,
                                             last_error=f"staged copy corrupt: {got} != {clip.sha256}")
            if (clip.last_error or "").startswith(f"{ErrorClass.BAD_DIGEST}:"):
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
                self.queue.renew_lease(clip.id, self.owner, lease_s=self.lease_s, now=self.clock())

        t = threading.Thread(target=renew, name=f"lease-{clip.id}", daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()


def expected_key(cfg: Config, clip: Clip) -> str:
    """The key a clip must have under the current config (used by verify)."""
    from .volume import Entry

    ext = Entry(clip.path, 0, 0, 0, 0).ext
    prefix = cfg.storage.prefix if cfg.storage else ""
    return object_key(prefix, cfg.station.id, clip.camera, clip.mtime_ns, clip.sha256 or "", ext)
