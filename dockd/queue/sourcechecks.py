"""The queue's record of source re-reads (``source_checks``, schema v5) that the wipe gate relies on.

A row says: the file ``path`` of clip ``clip_id`` on the camera had this identity
(:class:`dockd.core.sourceproof.Identity`) before and after it was read in full, and the
bytes read hashed to ``sha256``. It is written, with its audit event ``source.verified``,
in one transaction, before anything relies on it; the wipe gate then judges it against a
fresh ``lstat`` (:func:`dockd.core.sourceproof.judge`). Rows of a clip are deleted once the
clip is confirmed wiped, so the table holds only work in flight.
"""

from __future__ import annotations

import time

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from dockd.core.lifecycle import ClipState
from dockd.core.sourceproof import Identity, Proof
from dockd.queue.records import Clip
from dockd.queue.schema import clips, source_checks
from dockd.queue.store import Queue

# A clip's source is worth verifying ahead of its wipe from the moment it is staged until it is wiped.
VERIFIABLE = (ClipState.STAGED, ClipState.UPLOADING, ClipState.UPLOADED)


def record(queue: Queue, clip: Clip, path: str, ident: Identity, sha256: str, *, expected: str,
           now: float | None = None) -> Proof:
    """Commit the re-read of ``path`` (the clip's own path or one of its sidecars', which should hash to
    ``expected``) and its audit event ``source.verified`` (saying whether it matched)."""
    t = time.time() if now is None else now
    vals = {"size": ident.size, "mtime_ns": ident.mtime_ns, "ctime_ns": ident.ctime_ns, "dev": str(ident.dev),
            "ino": str(ident.ino), "sha256": sha256, "verified_at": t}
    with queue.tx() as c:
        c.execute(sqlite_insert(source_checks).values(clip_id=clip.id, path=path, **vals)
                  .on_conflict_do_update(index_elements=["clip_id", "path"], set_=vals))
        # nanosecond times and inode numbers as text: JCS (the audit chain's canonical JSON) has no integers
        # beyond 2**53
        detail = {"path": path, "sha256": sha256, "size": ident.size, "mtime_ns": str(ident.mtime_ns),
                  "ctime_ns": str(ident.ctime_ns), "ino": str(ident.ino), "matched": sha256 == expected}
        queue._audit(c, "source.verified", camera=clip.camera, clip=clip.id, detail=detail, now=t)
    return Proof(ident, sha256, t)


def proofs(queue: Queue, clip_id: int) -> dict[str, Proof]:
    """The recorded re-reads of one clip's files, by path."""
    with queue.engine.connect() as c:
        rows = c.execute(select(source_checks).where(source_checks.c.clip_id == clip_id)).all()
    return {r.path: Proof(Identity(r.size, r.mtime_ns, r.ctime_ns, int(r.dev), int(r.ino)), r.sha256, r.verified_at)
            for r in rows}


def drop(queue: Queue, clip_id: int) -> None:
    """Forget a clip's re-reads (it is wiped: they prove nothing more)."""
    with queue.tx() as c:
        c.execute(delete(source_checks).where(source_checks.c.clip_id == clip_id))


def _has_check(matched: bool, since: float):  # noqa: ANN202 - an SQL expression
    cond = [source_checks.c.clip_id == clips.c.id, source_checks.c.path == clips.c.path,
            source_checks.c.verified_at >= since]
    if matched:
        cond.append(source_checks.c.sha256 == clips.c.sha256)
    return exists().where(and_(*cond))


def unverified(queue: Queue, camera: str, since: float) -> list[int]:
    """Ids of the camera's clips between staged and uploaded whose own file was not re-read since ``since``
    (the camera's dock), oldest first (the order uploads take them). Bounded by the work in flight: an
    index search by camera and state."""
    q = (select(clips.c.id).where(clips.c.camera == camera, clips.c.state.in_([str(s) for s in VERIFIABLE]),
                                  clips.c.sha256.is_not(None), ~_has_check(False, since))
         .order_by(clips.c.id))
    with queue.engine.connect() as c:
        return [r.id for r in c.execute(q)]


def proven_uploaded(queue: Queue, camera: str, since: float) -> list[Clip]:
    """The camera's ``uploaded`` clips whose own file was re-read since ``since`` and matched (the gate
    still judges each proof, and the sidecars', against the file now there)."""
    q = (select(clips).where(clips.c.camera == camera, clips.c.state == str(ClipState.UPLOADED),
                             _has_check(True, since))
         .order_by(clips.c.id))
    with queue.engine.connect() as c:
        return [Clip.from_row(r) for r in c.execute(q)]
