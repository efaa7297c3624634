"""One station-wide ledger of the staging disk's free space promised to copies in flight.

Each camera worker used to check the free space alone, so several cameras
starting at once each saw the same free bytes and together overran them (the
disk that also holds ``queue.db`` reached 0). Now a copy *takes* its size
from this ledger before it starts and gives it back when it is staged or
aborted; it may start only while

    free - reserved - reserve >= size

with ``reserved`` the sum of what the other copies in flight took, and
``reserve`` (``[offload] reserve_free_mb``) the headroom kept for the queue
and the filesystem. The check and the taking are one step under one lock.

A copy's bytes count twice while it is in flight (once in ``reserved``, once
as used on the disk, as far as it got): conservative, it costs at most one
clip of headroom per copy in flight and is gone once it is staged. Free space
changed by anything else (uploads pruning staged copies, an operator) is seen
at the next poll; a release wakes every waiter at once.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path


def _disk(path: Path) -> tuple[int, int]:
    u = shutil.disk_usage(path)
    return u.free, u.total


class SpaceLedger:
    """Thread-safe; one per staging disk, shared by every camera worker (the daemon's one Offloader)."""

    def __init__(self, path: Path, reserve: int, *, disk: Callable[[Path], tuple[int, int]] = _disk):
        self.path, self.reserve, self._disk = path, reserve, disk
        self._cond = threading.Condition()
        self.reserved = 0  # bytes promised to copies in flight

    def free(self) -> int:
        return self._disk(self.path)[0]

    def total(self) -> int:
        return self._disk(self.path)[1]

    def take(self, need: int, wait: float = 0.0) -> tuple[bool, int]:
        """Promise ``need`` bytes if they fit beside the others and the reserve: (True, free).

        Else wait up to ``wait`` seconds for a release (without taking) and
        return (False, free as last seen); the caller loops, checking its
        cancel event between calls."""
        with self._cond:
            free = self.free()
            if free - self.reserved - self.reserve >= need:
                self.reserved += need
                return True, free
            if wait > 0:
                self._cond.wait(wait)
            return False, free

    def whole(self, wait: float = 0.0) -> bool:
        """True if every promised byte and the reserve are free on the disk (after an ENOSPC: the
        failed copy's partial file is deleted, so its promise must be real again before it retries).
        Else wait up to ``wait`` seconds for a release and return False."""
        with self._cond:
            if self.free() - self.reserved - self.reserve >= 0:
                return True
            if wait > 0:
                self._cond.wait(wait)
            return False

    def release(self, n: int) -> None:
        """Give back what :meth:`take` promised (the copy is staged or aborted)."""
        if n <= 0:
            return
        with self._cond:
            if n > self.reserved:
                raise ValueError(f"releasing {n} bytes but only {self.reserved} are promised")
            self.reserved -= n
            self._cond.notify_all()
