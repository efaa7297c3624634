"""Opening files an operator names on the command line (manifests, clips, public keys).

Such a path may be anything: a FIFO (a plain ``open`` blocks forever waiting
for a writer), ``/dev/zero`` (reading never ends), a symlink planted next to
the evidence. Only regular files are read: the open is non-blocking and does
not follow a final symlink, and ``fstat`` decides before a byte is read.
"""

from __future__ import annotations

import errno
import os
import stat

from dockd.core.errors import UsageError


def open_regular(path: str | os.PathLike, *, dir_fd: int | None = None) -> int:
    """An O_RDONLY descriptor of the regular file ``path`` (relative to ``dir_fd`` if given); UsageError
    (exit 2) naming what it is otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UsageError(f"{path}: is a symbolic link (not followed; name the file itself)") from None
        raise UsageError(f"{path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            m = st.st_mode
            kind = ("a FIFO" if stat.S_ISFIFO(m) else "a device" if stat.S_ISCHR(m) or stat.S_ISBLK(m)
                    else "a socket" if stat.S_ISSOCK(m) else "a directory" if stat.S_ISDIR(m) else "special")
            raise UsageError(f"{path}: is {kind}, not a regular file")
        # Regular file: blocking reads from here on (O_NONBLOCK means nothing for them, but be plain).
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike, limit: int, *, dir_fd: int | None = None) -> bytes | None:
    """The bytes of the regular file ``path`` (relative to ``dir_fd`` if given), or None if it holds more
    than ``limit`` bytes.

    Reads at most ``limit + 1`` bytes whatever the file claims (it may grow).
    """
    fd = open_regular(path, dir_fd=dir_fd)
    try:
        chunks, n = [], 0
        while n <= limit:
            try:
                b = os.read(fd, min(1 << 16, limit + 1 - n))
            except OSError as e:
                raise UsageError(f"{path}: {e.strerror or e}") from None
            if not b:
                break
            chunks.append(b)
            n += len(b)
        return None if n > limit else b"".join(chunks)
    finally:
        os.close(fd)
