"""Single-pass copy and hash, and hashing a file from the disk, with I/O and hashing overlapped.

Up to three stages run at once on fixed, reused, page-aligned buffers (no
allocation per chunk): a reader thread fills a free buffer from the source
(``readv``), the calling thread hashes it (hashlib releases the GIL on large
buffers), and for a copy a writer thread writes it to the staging file. A
buffer goes back to the free list once it is written (or hashed). Memory is
bounded by ``DEPTH * chunk`` whatever the clip size (chunk <= ``bufsize``;
smaller for small files so that even a 2 MiB clip is pipelined).

Direct I/O: where the filesystem allows it, the source is read and the
staging copy written with ``O_DIRECT``, and :func:`hash_file` re-reads with
``O_DIRECT``. The bytes then move between the device and our buffers without
the page cache: no copy through it, no cache to drop, nothing else evicted,
and a re-read that provably comes from the disk. Where ``O_DIRECT`` is
refused (ramfs, many FUSE filesystems) or an unaligned read or write comes up
(a file's last bytes), that file descriptor falls back to ordinary I/O; for a
buffered staging copy, writeback is started as the copy goes
(``sync_file_range``) so the caller's fsync is short.

Errors: the source raising, or holding fewer/more bytes than recorded, stops
the copy (ShortRead / OSError); a failed write or writeback start is a
WriteError (the caller deletes the temporary file and copies again from the
camera; the fsync is never retried on the same file). Durability is the
caller's: nothing here fsyncs.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import queue
import threading
from collections.abc import Callable

DEPTH = 4  # buffers in flight: one being read, one hashed, one written, one queued
MIN_CHUNK = 256 << 10  # smallest chunk (a power of two, a multiple of ALIGN)
ALIGN = 4096  # O_DIRECT offsets and lengths: a multiple of the logical block size (4096 covers every disk)
O_DIRECT = getattr(os, "O_DIRECT", 0)

_SYNC_FILE_RANGE_WRITE = 2


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


def set_direct(fd: int, on: bool) -> bool:
    """Turn ``O_DIRECT`` on or off for ``fd``; False if the filesystem refuses it (the fd is unchanged)."""
    if not O_DIRECT:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    new = flags | O_DIRECT if on else flags & ~O_DIRECT
    if new != flags:
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, new)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                return False
            raise
    return True


def _libc_sync_file_range():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        f = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    f.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    f.restype = ctypes.c_int
    return f


_sfr = _libc_sync_file_range()


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing ``[offset, offset+nbytes)`` of ``fd`` to disk now (no waiting).

    Raises OSError if the kernel reports an error; silently does nothing
    where sync_file_range does not exist (not Linux) or is not supported.
    """
    if _sfr is None or nbytes <= 0:
        return
    if _sfr(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE) != 0:
        err = ctypes.get_errno()
        if err in (0, 38, 22, 95, 29):  # ENOSYS, EINVAL, EOPNOTSUPP, ESPIPE: not supported here
            return
        raise OSError(err, os.strerror(err))


# Buffers are reused across copies: many small clips would otherwise pay page
# faults for fresh memory on every file. They are anonymous mmaps (page
# aligned, as O_DIRECT requires). Chunk sizes are powers of two (or bufsize),
# so few sizes exist; at most 2 * DEPTH buffers of each are kept (a copy and a
# re-read may run at the same time).
_pool: dict[int, list[mmap.mmap]] = {}
_pool_lock = threading.Lock()


def _take_buffers(size: int, n: int) -> list[mmap.mmap]:
    with _pool_lock:
        free = _pool.setdefault(size, [])
        got = [free.pop() for _ in range(min(n, len(free)))]
    return got + [mmap.mmap(-1, size) for _ in range(n - len(got))]


def _give_buffers(size: int, bufs: list[mmap.mmap]) -> None:
    with _pool_lock:
        free = _pool.setdefault(size, [])
        keep = max(0, 2 * DEPTH - len(free))
        free.extend(bufs[:keep])
    for b in bufs[keep:]:
        b.close()


def chunk_size(size: int, bufsize: int) -> int:
    """Chunk for a clip of ``size`` bytes: ``bufsize``, or a smaller power of two for small
    clips so that reading, hashing and writing still overlap (at least DEPTH chunks)."""
    if size >= DEPTH * bufsize:
        return bufsize
    c = MIN_CHUNK
    while c * DEPTH < size and c * 2 <= bufsize:
        c *= 2
    return min(bufsize, c)


_DONE = object()


class _WriterFailed:
    def __init__(self, err: BaseException):
        self.err = err


def _read(fd: int, buf: mmap.mmap, direct: list[bool]) -> int:
    """One read into ``buf``; a direct read refused for alignment retries the ordinary way."""
    try:
        return os.readv(fd, [buf])
    except OSError as e:
        if not direct[0] or e.errno != errno.EINVAL:
            raise
    set_direct(fd, False)
    direct[0] = False
    return os.readv(fd, [buf])


def _write(fd: int, view: memoryview, direct: list[bool]) -> None:
    """Write all of ``view``; a direct write refused for alignment (EINVAL) goes on the ordinary way
    from where it stopped (a failed write(2) writes nothing, so no byte is written twice)."""
    while view:
        try:
            n = os.write(fd, view)
        except OSError as e:
            if not direct[0] or e.errno != errno.EINVAL:
                raise
            set_direct(fd, False)
            direct[0] = False
            continue
        view = view[n:]


class _Pipes:
    """The channels between the stages of one :func:`_run`: reader -> caller (``filled``), caller -> writer
    (``to_write``), writer -> caller (``written``: None when done, or the OSError), buffers back to the reader
    (``free``), and ``stop`` for both threads."""

    def __init__(self, bufs: list[mmap.mmap]):
        self.free: queue.Queue = queue.Queue()
        for b in bufs:
            self.free.put(b)
        self.filled: queue.Queue = queue.Queue()
        self.to_write: queue.Queue = queue.Queue()
        self.written: queue.Queue = queue.Queue()
        self.stop = threading.Event()

    def shut_down(self, rt: threading.Thread, wt: threading.Thread | None, writer_done: bool) -> None:
        """Stop both threads and wait for them (every buffer is then back with the caller)."""
        self.stop.set()
        if not writer_done:
            self.to_write.put(_DONE)
        self.free.put(None)  # wakes a reader waiting for a free buffer
        while rt.is_alive():
            rt.join(0.05)
            self.free.put(None)
        if wt is not None:
            wt.join()


def _reader(src_fd: int, src_direct: list[bool], pipes: _Pipes) -> None:
    """The reader thread of :func:`_run`: fills free buffers from ``src_fd`` into ``filled`` as
    ``(buffer, n)``, ``n == 0`` at the end; an exception goes to ``filled`` for the consumer."""
    try:
        while True:
            b = pipes.free.get()
            if b is None or pipes.stop.is_set():
                return
            n = _read(src_fd, b, src_direct)
            pipes.filled.put((b, n))
            if not n:
                return
    except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
        pipes.filled.put(e)


def _writer(dst_fd: int, dst_direct: list[bool], pipes: _Pipes) -> None:
    """The writer thread of :func:`_run`: writes ``(buffer, n)`` items from ``to_write`` to ``dst_fd`` until
    ``_DONE``, returning each buffer to ``free``; puts None (done) or the exception on ``written``."""
    off = 0
    try:
        while True:
            item = pipes.to_write.get()
            if item is _DONE or pipes.stop.is_set():
                pipes.written.put(None)
                return
            b, n = item
            if dst_direct[0] and n % ALIGN:  # the last, unaligned bytes go through the page cache
                set_direct(dst_fd, False)
                dst_direct[0] = False
            _write(dst_fd, memoryview(b)[:n], dst_direct)
            if not dst_direct[0]:
                start_writeback(dst_fd, off, n)
            off += n
            pipes.free.put(b)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
        pipes.stop.set()
        pipes.written.put(e)
        pipes.filled.put(_WriterFailed(e))  # wakes the caller if it waits for data


def _run(src_fd: int, size: int | None, chunk: int, dst_fd: int | None, *, cancel: threading.Event | None,
         progress: Callable[[int], None] | None) -> tuple[str, int]:
    """Read ``src_fd`` to its end (hashing, and writing to ``dst_fd`` if given): (hex SHA-256, bytes)."""
    src_direct = [set_direct(src_fd, True)]
    if not src_direct[0]:
        _advise(src_fd, os.POSIX_FADV_SEQUENTIAL)
    dst_direct = [dst_fd is not None and set_direct(dst_fd, True)]
    # Hashing alone needs only double buffering (one read while one is hashed).
    bufs = _take_buffers(chunk, DEPTH if dst_fd is not None else 2)
    pipes = _Pipes(bufs)

    rt = threading.Thread(target=_reader, args=(src_fd, src_direct, pipes), name="copy-reader", daemon=True)
    rt.start()
    wt = None
    if dst_fd is not None:
        wt = threading.Thread(target=_writer, args=(dst_fd, dst_direct, pipes), name="copy-writer", daemon=True)
        wt.start()
    h = hashlib.sha256()
    total = 0
    writer_done = wt is None
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            item = pipes.filled.get()
            if isinstance(item, _WriterFailed):
                writer_done = True
                _raise_writer(item.err)
            if isinstance(item, BaseException):
                raise item
            b, n = item
            if not n:
                break
            total += n
            if size is not None and total > size:
                raise ShortRead(f"source is longer than its recorded size {size}")
            h.update(memoryview(b)[:n])
            if wt is not None:
                pipes.to_write.put((b, n))
            else:
                pipes.free.put(b)
            if progress is not None:
                progress(n)
        if size is not None and total != size:
            raise ShortRead(f"read {total} bytes, expected {size}")
        if wt is not None:
            pipes.to_write.put(_DONE)
            err = pipes.written.get()
            writer_done = True
            if err is not None:
                _raise_writer(err)
    finally:
        pipes.shut_down(rt, wt, writer_done)
        _give_buffers(chunk, bufs)
        if not src_direct[0]:
            _advise(src_fd, os.POSIX_FADV_DONTNEED)
    return h.hexdigest(), total


def copy_hash(src_fd: int, dst_fd: int, size: int, *, bufsize: int = 4 << 20,
              cancel: threading.Event | None = None,
              progress: Callable[[int], None] | None = None) -> str:
    """Copy exactly ``size`` bytes from ``src_fd`` to ``dst_fd``; return the hex SHA-256 of what was written.

    Raises ShortRead if the source holds fewer or more bytes than ``size``,
    Cancelled if ``cancel`` is set, WriteError if writing fails and OSError
    from the source device. The destination is not fsynced here (the caller
    owns durability). Both descriptors may be left with ``O_DIRECT`` set.
    """
    return _run(src_fd, size, chunk_size(size, bufsize), dst_fd, cancel=cancel, progress=progress)[0]


def hash_fd(fd: int, *, size_hint: int | None = None, bufsize: int = 4 << 20,
            cancel: threading.Event | None = None) -> tuple[str, int]:
    """Hash what remains to be read from ``fd``: (hex SHA-256, bytes read).

    Reads with ``O_DIRECT`` where the filesystem allows it (so the bytes come
    from the device, not the page cache), overlapping reading and hashing.
    ``size_hint`` only picks the chunk size; the whole file is always read.
    """
    chunk = chunk_size(size_hint, bufsize) if size_hint is not None else bufsize
    return _run(fd, None, chunk, None, cancel=cancel, progress=None)


def _raise_writer(err: BaseException | None) -> None:
    if isinstance(err, OSError):
        raise WriteError(err) from err
    if err is not None:
        raise err
    raise AssertionError("writer stopped without an error")
