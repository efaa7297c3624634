"""Durability helpers, in one place (after borgbackup's SyncFile/SaveFile).

Every write of evidence or of anything evidence depends on (manifests, keys,
staged clips) goes: temporary name in the same directory -> write -> fsync
the file -> rename over the final name -> fsync the directory. A crash at any
point leaves either the old file, or the complete new one, plus perhaps a
``*.tmp`` that start-up recovery deletes.

An error from write() or fsync() is never answered by retrying the fsync: the
kernel may already have dropped the dirty pages and a second fsync would
report success for data that never reached the disk. Callers delete the
temporary file and produce the data again from its source.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import queue
import threading
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically and durably, with file mode ``mode``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def publish(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename an already fsynced temporary file into place and make the rename durable."""
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def drop_cache(fd: int) -> None:
    """Ask the kernel to drop clean cached pages of ``fd`` so the next read comes from the device."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def sha256_file(path: str | os.PathLike, *, bufsize: int = 4 << 20, uncached: bool = False) -> tuple[str, int]:
    """Hash a local file; return (hex SHA-256, bytes read).

    With ``uncached`` the bytes must come from the disk, not from the page
    cache: the file is read with O_DIRECT where the filesystem supports it
    (exact, and cheaper: no copy through the cache), else its cached pages are
    dropped first (and after). Reading and hashing overlap (a reader thread).
    """
    if uncached:
        got = _sha256_direct(path, bufsize)
        if got is not None:
            return got
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if uncached:
            drop_cache(fd)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass
        bufs = [memoryview(bytearray(bufsize)) for _ in range(2)]
        got = _hash_fd(fd, bufs, _chunk(fd, bufsize, 1))
        if uncached:
            drop_cache(fd)
        return got
    finally:
        os.close(fd)


_ALIGN = 1 << 16  # O_DIRECT wants aligned buffers, offsets and lengths; 64 KiB covers any block size
_direct_pool: list[mmap.mmap] = []
_direct_lock = threading.Lock()


def _chunk(fd: int, bufsize: int, align: int) -> int:
    """Read size: ``bufsize``, smaller for small files so that reading and hashing still overlap."""
    try:
        size = os.fstat(fd).st_size
    except OSError:
        return bufsize
    c = max(256 << 10, -(-size // 4))
    c = -(-c // align) * align
    return min(bufsize, c)


def _sha256_direct(path: str | os.PathLike, bufsize: int) -> tuple[str, int] | None:
    """Hash with O_DIRECT reads; None if the filesystem (or the platform) does not support it."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    size = max(_ALIGN, -(-bufsize // _ALIGN) * _ALIGN)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | flag)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return None
        raise
    with _direct_lock:
        mine = [m for m in _direct_pool if len(m) == size][:2]
        for m in mine:
            _direct_pool.remove(m)
    mine += [mmap.mmap(-1, size) for _ in range(2 - len(mine))]  # page-aligned
    try:
        return _hash_fd(fd, [memoryview(m) for m in mine], _chunk(fd, size, _ALIGN))
    except OSError as e:
        if e.errno == errno.EINVAL:  # an unaligned short read in the middle: read it the ordinary way
            return None
        raise
    finally:
        os.close(fd)
        with _direct_lock:
            del _direct_pool[4:]
            _direct_pool.extend(mine)


def _hash_fd(fd: int, bufs: list[memoryview], chunk: int) -> tuple[str, int]:
    """SHA-256 of everything read from ``fd``, a reader thread filling ``bufs`` while this thread hashes."""
    free: queue.Queue = queue.Queue()
    filled: queue.Queue = queue.Queue()
    for b in bufs:
        free.put(b[:chunk])

    def reader() -> None:
        try:
            while True:
                b = free.get()
                if b is None:
                    return
                n = os.readv(fd, [b])
                filled.put((b, n))
                if not n:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the hashing thread
            filled.put(e)

    t = threading.Thread(target=reader, name="hash-reader", daemon=True)
    t.start()
    h = hashlib.sha256()
    total = 0
    try:
        while True:
            item = filled.get()
            if isinstance(item, BaseException):
                raise item
            b, n = item
            if not n:
                break
            h.update(b[:n])
            total += n
            free.put(b)
    finally:
        free.put(None)
        while t.is_alive():
            t.join(0.05)
            free.put(None)
    return h.hexdigest(), total


class HashingReader:
    """A file-object wrapper that hashes everything read through it (borg's hashing wrapper)."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.sha256 = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.sha256.update(b)
        self.count += len(b)
        return b
