"""A mounted network share (``file:///path``) with the same guarantees as S3.

Objects are written to a temporary name beside their final key, fsynced,
re-read with the page cache dropped and hashed, then renamed into place with
the directory fsynced. An existing object is never replaced: a link(2) to the
final name fails if something is already there, and then the existing bytes
are compared instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .. import durable
from ..config import StorageConfig
from .base import ErrorClass, PartLedger, RemoteObject, StoreFailure


class FileBackend:
    name = "file"

    def __init__(self, cfg: StorageConfig):
        self.root = cfg.root
        self.limiter = None

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise StoreFailure(ErrorClass.PERMANENT, f"unsafe object key {key!r}", "BadKey")
        return self.root.joinpath(*parts)

    def head(self, key: str) -> RemoteObject | None:
        p = self._path(key)
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreFailure(ErrorClass.TRANSIENT, f"{p}: {e.strerror}", "OSError") from e
        side = p.with_name(p.name + ".sha256")
        sha = side.read_text().split()[0] if side.exists() else durable.sha256_file(p)[0]
        return RemoteObject(key=key, size=st.st_size, sha256=sha)

    def _store(self, key: str, write, size: int, sha256: str) -> RemoteObject:
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}{durable.TMP_SUFFIX}")
            try:
                with open(tmp, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                got, n = durable.sha256_file(tmp, uncached=True)
                if got != sha256 or n != size:
                    raise StoreFailure(ErrorClass.BAD_DIGEST, f"{key}: share returned {got} ({n} bytes) after "
                                                              f"writing {sha256} ({size} bytes)", "BadDigest")
                try:
                    os.link(tmp, dest)  # fails if dest exists: never overwrite
                except FileExistsError:
                    pass
                durable.write_atomic(dest.with_name(dest.name + ".sha256"), f"{sha256}  {dest.name}\n".encode())
                durable.fsync_dir(dest.parent)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as e:
            raise StoreFailure(ErrorClass.TRANSIENT, f"{dest}: {e.strerror or e}", "OSError") from e
        obj = self.head(key)
        if obj is None or obj.size != size or obj.sha256 != sha256:
            raise StoreFailure(ErrorClass.CONFLICT, f"{key}: share holds different content", "Conflict")
        return obj

    def put_file(self, key: str, path: Path, size: int, sha256: str, ledger: PartLedger | None = None,
                 progress=None) -> RemoteObject:
        def write(f):
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, 4 << 20)
        return self._store(key, write, size, sha256)

    def put_bytes(self, key: str, data: bytes, sha256: str) -> RemoteObject:
        return self._store(key, lambda f: f.write(data), len(data), sha256)

    def read_sha256(self, key: str) -> tuple[str, int]:
        return durable.sha256_file(self._path(key), uncached=True)

    def check(self) -> None:
        if not self.root.is_dir():
            raise StoreFailure(ErrorClass.PERMANENT, f"share {self.root} is not a mounted directory", "NoShare")

    def lock_enforced(self) -> bool:
        return False

    def abort_unknown_uploads(self, known: set[str]) -> list[str]:
        return []
