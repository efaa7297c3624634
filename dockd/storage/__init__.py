"""Central storage backends behind one small interface (see :mod:`dockd.storage.base`)."""

from __future__ import annotations

from ..config import StorageConfig
from .base import Backend, RemoteObject, object_key

__all__ = ["Backend", "RemoteObject", "object_key", "open_backend"]


def open_backend(cfg: StorageConfig) -> Backend:
    if cfg.scheme == "file":
        from .localfs import FileBackend

        return FileBackend(cfg)
    from .s3 import S3Backend

    return S3Backend(cfg)
