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

import os
import stat
from pathlib import Path

from dockd.evidence.copier import hash_fd  # the one read-and-hash loop

TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tmp(path: Path, data: bytes, mode: int) -> Path:
    """``data`` written and fsynced to a temporary name beside ``path`` (deleted again if that fails)."""
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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o644, *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically and durably, with file mode ``mode``.

    ``sync_dir=False`` leaves the directory's fsync to the caller (one for many renames): the rename
    is then not yet durable, and nothing may claim it is before the caller's :func:`fsync_dir`."""
    path = Path(path)
    tmp = _write_tmp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def create_new(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> bool:
    """Durably create ``path`` holding ``data``, never replacing anything: False if ``path`` exists.

    The complete, fsynced file appears under its name in one step (a hard link of the temporary
    file, which fails if the name is taken), so a reader never sees part of it."""
    path = Path(path)
    tmp = _write_tmp(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def publish(tmp: str | os.PathLike, final: str | os.PathLike, *, sync_dir: bool = True) -> None:
    """Rename an already fsynced temporary file into place and make the rename durable
    (``sync_dir=False``: the caller's later :func:`fsync_dir` does, as for :func:`write_atomic`)."""
    os.replace(tmp, final)
    if sync_dir:
        fsync_dir(Path(final).parent)


def drop_cache(fd: int) -> None:
    """Ask the kernel to drop clean cached pages of ``fd`` so the next read comes from the device."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def sha256_file(path: str | os.PathLike, *, bufsize: int = 4 << 20, uncached: bool = False) -> tuple[str, int]:
    """Hash a local file: (hex SHA-256, bytes). With ``uncached`` the bytes come from the disk,
    not the page cache: read with O_DIRECT, or where that is refused, after dropping the file's cache."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if uncached:
            drop_cache(fd)
        st = os.fstat(fd)
        # the file's size picks the chunk, so that a small file's reads and hashing overlap too
        got = hash_fd(fd, size_hint=st.st_size if stat.S_ISREG(st.st_mode) else None, bufsize=bufsize)
        if uncached:
            drop_cache(fd)
        return got
    finally:
        os.close(fd)


def sha256_fd(fd: int, *, bufsize: int = 4 << 20) -> tuple[str, int]:
    """Hash what remains to be read from ``fd``: (hex SHA-256, bytes read).

    Reading and hashing overlap; O_DIRECT is used where the filesystem allows
    it (see :func:`dockd.evidence.copier.hash_fd`), so the bytes are the device's."""
    return hash_fd(fd, bufsize=bufsize)
