"""A mounted network share (``file:///path``) with the same guarantees as S3.

Objects are written to a temporary name beside their final key, fsynced,
re-read with the page cache dropped and hashed, then linked into place with
the directory fsynced. An existing object is never replaced: link(2) to the
final name fails if something is already there, and then the existing bytes
are hashed and compared instead (a different object is a CONFLICT and stays
as it was). ``<key>.sha256`` beside each object records its checksum so HEAD
need not read the whole file; it is written only for bytes we verified.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from dockd.evidence import durable

from ..config import StorageConfig
from .base import ErrorClass, PartLedger, RemoteObject, StoreFailure, TokenBucket

CHUNK = 1 << 20


class FileBackend:
    name = "file"
    conditional_writes = True  # link(2) never replaces an existing object

    @staticmethod
    def multipart_for(size: int) -> bool:
        return False

    def __init__(self, cfg: StorageConfig, *, limiter: TokenBucket | None = None):
        self.root = cfg.root
        self.limiter = limiter  # the station's shared bandwidth limit, if any

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise StoreFailure(ErrorClass.PERMANENT, f"unsafe object key {key!r}", "BadKey")
        return self.root.joinpath(*parts)

    @staticmethod
    def _side(p: Path) -> Path:
        return p.with_name(p.name + ".sha256")

    def head(self, key: str) -> RemoteObject | None:
        p = self._path(key)
        try:
            st = p.stat()
            try:
                side = self._side(p).read_text().split()
                sha = side[0] if side else None
            except FileNotFoundError:
                sha = None
            if sha is None:
                sha = durable.sha256_file(p)[0]
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreFailure(ErrorClass.TRANSIENT, f"{p}: {e.strerror or e}", "OSError") from e
        return RemoteObject(key=key, size=st.st_size, sha256=sha)

    def find(self, key: str, size: int, sha256: str, path: Path | None = None) -> RemoteObject | None:
        obj = self.head(key)
        if obj is None:
            return None
        if obj.size != size or obj.sha256 != sha256:
            raise StoreFailure(ErrorClass.CONFLICT, f"{key}: share holds different content "
                                                    f"(size {obj.size}, sha256 {obj.sha256})", "Conflict")
        return obj

    def _tmp(self, dest: Path) -> Path:
        return dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}"
                              f"{durable.TMP_SUFFIX}")

    def _store(self, key: str, write, size: int, sha256: str) -> RemoteObject:
        existing = self.find(key, size, sha256)  # idempotent re-put, or CONFLICT
        if existing is not None:
            return dataclasses.replace(existing, already_present=True)
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._tmp(dest)
            try:
                with open(tmp, "xb") as f:
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
                    got, n = durable.sha256_file(dest, uncached=True)
                    if got != sha256 or n != size:
                        raise StoreFailure(ErrorClass.CONFLICT, f"{key}: share holds different content "
                                                                f"(size {n}, sha256 {got})", "Conflict") from None
                self._write_side(dest, sha256)
                durable.fsync_dir(dest.parent)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as e:
            raise StoreFailure(ErrorClass.TRANSIENT, f"{dest}: {e.strerror or e}", "OSError") from e
        obj = self.head(key)
        if obj is None or obj.size != size or obj.sha256 != sha256:
            raise StoreFailure(ErrorClass.CONFLICT, f"{key}: share holds different content", "Conflict")
        return obj

    def _write_side(self, dest: Path, sha256: str) -> None:
        """Record the verified checksum beside the object (atomic; same bytes from any writer)."""
        side = self._side(dest)
        tmp = self._tmp(side)
        try:
            with open(tmp, "x") as f:
                f.write(f"{sha256}  {dest.name}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, side)
        finally:
            tmp.unlink(missing_ok=True)

    def _copy(self, src, dst, progress) -> None:
        while b := src.read(CHUNK):
            if self.limiter:
                self.limiter.take(len(b))
            dst.write(b)
            if progress:
                progress(len(b))

    def put_file(self, key: str, path: Path, size: int, sha256: str, ledger: PartLedger | None = None,
                 progress=None) -> RemoteObject:
        def write(f):
            with open(path, "rb") as src:
                self._copy(src, f, progress)
        return self._store(key, write, size, sha256)

    def put_bytes(self, key: str, data: bytes, sha256: str) -> RemoteObject:
        return self._store(key, lambda f: f.write(data), len(data), sha256)

    def read_sha256(self, key: str) -> tuple[str, int]:
        try:
            return durable.sha256_file(self._path(key), uncached=True)
        except OSError as e:
            raise StoreFailure(ErrorClass.TRANSIENT, f"{key}: {e.strerror or e}", "OSError") from e

    def read_small(self, key: str, limit: int) -> bytes | None:
        """The bytes of a small object, None if there is none; never follows a symlink, never reads more
        than ``limit`` bytes (StoreFailure(PERMANENT) if the object is bigger)."""
        p = self._path(key)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreFailure(ErrorClass.PERMANENT, f"{p}: {e.strerror or e}", "OSError") from e
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreFailure(ErrorClass.PERMANENT, f"{p}: not a regular file", "NotFile")
            data = b""
            while len(data) <= limit and (chunk := os.read(fd, limit + 1 - len(data))):
                data += chunk
        finally:
            os.close(fd)
        if len(data) > limit:
            raise StoreFailure(ErrorClass.PERMANENT, f"{key}: more than {limit} bytes", "TooBig")
        return data

    def iter_chunks(self, key: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The object streamed in chunks; never follows a symlink or opens anything but a regular file."""
        p = self._path(key)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            raise StoreFailure(ErrorClass.PERMANENT, f"{p}: {e.strerror or e}", "OSError") from e
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreFailure(ErrorClass.PERMANENT, f"{p}: not a regular file", "NotFile")
            while data := os.read(fd, chunk):
                yield data
        finally:
            os.close(fd)

    def check(self) -> None:
        if not self.root.is_dir():
            raise StoreFailure(ErrorClass.PERMANENT, f"share {self.root} is not a mounted directory", "NoShare")

    def lock_enforced(self) -> bool:
        return False

    def ensure_lock(self, obj: RemoteObject) -> RemoteObject:
        return obj

    def abort(self, key: str, upload_id: str) -> None:
        """A share has no multipart uploads: nothing to abort."""

    def abort_unknown_uploads(self, known: set[str], prefix: str | None = None, key: str | None = None) -> list[str]:
        return []

    def delete(self, key: str) -> None:
        """Unlink the object and its checksum side file (a missing one is fine), then fsync the directory."""
        p = self._path(key)
        try:
            for victim in (self._side(p), p):
                try:
                    os.unlink(victim)
                except FileNotFoundError:
                    pass
            durable.fsync_dir(p.parent)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreFailure(ErrorClass.TRANSIENT, f"{p}: {e.strerror or e}", "OSError") from e

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """Keys of the regular files under ``prefix`` (a directory prefix ending in ``/``); our checksum
        side files and temporary files are not objects. Symlinks are neither followed nor listed.
        With ``start_after``, only keys sorting after it (S3's StartAfter)."""
        top = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        for d, dirs, files in os.walk(top):  # followlinks=False
            dirs.sort()
            rel = Path(d).relative_to(self.root).as_posix()
            for f in sorted(files):
                if f.endswith(".sha256") or f.startswith(".") or os.path.islink(os.path.join(d, f)):
                    continue
                k = f if rel == "." else f"{rel}/{f}"
                if start_after is None or k > start_after:
                    yield k
