"""``dockd verify``: re-check what the queue claims, locally and (optionally) in central storage."""

from __future__ import annotations

from pathlib import Path

from dockd.config import Config
from dockd.core.lifecycle import HELD_LOCALLY, IN_STORAGE, STAGED_OR_LATER, ordered
from dockd.evidence import durable
from dockd.queue.store import Queue
from dockd.storage import open_backend
from dockd.storage.base import ErrorClass, StoreFailure


def verify_clips(cfg: Config, q: Queue, ids: list[int] | None, *, remote: bool, deep: bool) -> list[dict]:
    if ids is None:
        clips = q.clips(state=ordered(STAGED_OR_LATER))  # every clip with a verified copy and its hash
    else:
        clips = [q.clip(i) for i in ids]
    backend = open_backend(cfg.storage) if (remote and cfg.storage) else None
    out = []
    for c in clips:
        checks, ok = [], True
        if not c.sha256:
            out.append({"id": c.id, "ok": False, "checks": [f"no hash recorded (state {c.state})"]})
            continue
        if c.staged_path and Path(c.staged_path).exists():
            got, n = durable.sha256_file(c.staged_path, uncached=True)
            good = got == c.sha256 and n == c.size
            ok &= good
            checks.append(f"staged copy {'matches' if good else f'HASHES TO {got} ({n} bytes)'}")
        elif c.state in HELD_LOCALLY:
            ok = False
            checks.append("staged copy MISSING")
        else:
            checks.append("staged copy pruned (central storage holds it)")
        if remote:
            if backend is None:
                checks.append("remote: no [storage] configured")
                ok = False
            elif c.state in IN_STORAGE:
                key = c.object_key
                assert key is not None  # recorded with the hash when the clip was staged
                try:
                    obj = backend.head(key)
                    if obj is None:
                        ok = False
                        checks.append(f"remote object {key} MISSING")
                    else:
                        if obj.sha256 or not obj.composite:
                            good = obj.size == c.size and obj.sha256 == c.sha256
                        else:  # a multipart composite proves nothing by itself: recompute it, else download
                            staged = Path(c.staged_path) if c.staged_path and Path(c.staged_path).exists() else None
                            try:
                                good = backend.find(key, c.size, c.sha256, staged) is not None
                            except StoreFailure as e:
                                if e.cls is not ErrorClass.CONFLICT:
                                    raise
                                good = False
                        ok &= bool(good)
                        checks.append(f"remote checksum {'matches' if good else 'DIFFERS'} "
                                      f"({obj.sha256 or obj.composite})")
                        if deep:
                            got, n = backend.read_sha256(key)
                            good = got == c.sha256 and n == c.size
                            ok &= good
                            checks.append(f"remote bytes {'hash to the recorded sha256' if good else f'HASH TO {got}'}")
                except StoreFailure as e:
                    ok = False
                    checks.append(f"remote check failed: {e}")
            else:
                checks.append(f"remote: not uploaded yet ({c.state})")
        out.append({"id": c.id, "ok": bool(ok), "state": str(c.state), "sha256": c.sha256,
                    "object_key": c.object_key, "checks": checks})
    return out
