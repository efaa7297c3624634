"""Central storage backends behind one small interface (see :mod:`dockd.storage.base`)."""

from __future__ import annotations

from ..config import StorageConfig
from .base import Backend, RemoteObject, TokenBucket, object_key

__all__ = ["Backend", "RemoteObject", "TokenBucket", "object_key", "open_backend"]


def open_backend(cfg: StorageConfig, *, limiter: TokenBucket | None = None) -> Backend:
    """The backend for ``[storage] url``; ``limiter`` is the station's shared bandwidth limit (None: none)."""
    if cfg.scheme == "file":
        from .localfs import FileBackend

        return FileBackend(cfg, limiter=limiter)
    from .s3 import S3Backend

    return S3Backend(cfg, limiter=limiter)
