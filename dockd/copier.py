"""Single-pass copy and hash, with reading overlapped with hashing and writing.

A reader thread pulls large buffers from the camera into a small bounded
queue; the calling thread hashes each buffer (hashlib releases the GIL on
large buffers) and writes it to the staging file. Memory is bounded by
``(depth + 2) * bufsize`` whatever the clip size.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable

DEPTH = 4


class Cancelled(Exception):
    """The copy was cancelled (camera undocked or daemon stopping)."""


class ShortRead(Exception):
    """The source ended before (or after) its recorded size."""


class WriteError(Exception):
    """Writing or syncing the staging copy failed (EIO, ENOSPC, ...); the copy must be redone from the source."""

    def __init__(self, err: OSError):
        super().__init__(f"staging write failed: {err.strerror or err}")
        self.errno = err.errno


def _advise(fd: int, advice: int) -> None:
    try:
        os.posix_fadvise(fd, 0, 0, advice)
    except OSError:
        pass


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def copy_hash(src_fd: int, dst_fd: int, size: int, *, bufsize: int = 4 << 20,
              cancel: threading.Event | None = None,
              progress: Callable[[int], None] | None = None) -> str:
    """Copy exactly ``size`` bytes from ``src_fd`` to ``dst_fd``; return the hex SHA-256 of what was written.

    Raises ShortRead if the source holds fewer or more bytes than ``size``,
    Cancelled if ``cancel`` is set, and OSError from the device or the disk.
    The destination is not fsynced here (the caller owns durability).
    """
    _advise(src_fd, os.POSIX_FADV_SEQUENTIAL)
    q: queue.Queue = queue.Queue(maxsize=DEPTH)
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                b = os.read(src_fd, bufsize)
                q.put(b)
                if not b:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
            q.put(e)

    t = threading.Thread(target=reader, name="copy-reader", daemon=True)
    t.start()
    h = hashlib.sha256()
    n = 0
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            item = q.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                break
            n += len(item)
            if n > size:
                raise ShortRead(f"source is longer than its recorded size {size}")
            h.update(item)
            try:
                write_all(dst_fd, item)
            except OSError as e:
                raise WriteError(e) from e
            if progress is not None:
                progress(len(item))
        if n != size:
            raise ShortRead(f"read {n} bytes, expected {size}")
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        t.join()
        _advise(src_fd, os.POSIX_FADV_DONTNEED)
    return h.hexdigest()
