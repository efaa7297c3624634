"""Request bodies charged to the station's bandwidth limit (:class:`~dockd.storage.base.TokenBucket`),
with progress that counts each byte of a body once however often it is resent."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

from .base import TokenBucket

Progress = Callable[[int], None]


class _Throttled:
    """File wrapper that charges reads to a shared bandwidth limiter and reports progress.

    Progress counts each byte of the file once: a body rewound for a retry
    reports only what goes beyond the furthest point already reported."""

    def __init__(self, f: IO[bytes], limiter: TokenBucket | None, progress: Progress | None):
        self.f, self.limiter, self.progress = f, limiter, progress
        self.reported = 0

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        if b:
            if self.limiter:
                self.limiter.take(len(b))
            if self.progress:
                end = self.f.tell()
                if end > self.reported:
                    self.progress(end - self.reported)
                    self.reported = end
        return b

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()


def throttled(f: IO[bytes], limiter: TokenBucket | None, progress: Progress | None) -> _Throttled:
    """``f`` as a request body that charges ``limiter`` for every byte read and reports ``progress``."""
    return _Throttled(f, limiter, progress)
