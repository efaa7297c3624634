"""Writing a bag directory durably: every file hashed (SHA-256 and SHA-512) as it is written, fsynced,
the whole bag built under a temporary name beside its destination and renamed into place when complete.

A crash leaves either no bag or the complete one, plus perhaps a hidden ``.{name}.partial-{pid}``
directory that no one can take for a bag (the operator deletes it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dockd.agency.disclosure import bagfmt
from dockd.core.errors import UsageError
from dockd.evidence.durable import fsync_dir


@dataclass(frozen=True)
class Written:
    path: str  # bag-relative
    size: int
    sha256: str
    sha512: str


class BagWriter:
    """Files under a temporary directory; :meth:`commit` renames it to ``dest``. Thread-safe per file."""

    def __init__(self, dest: Path):
        self.dest = Path(dest)
        if self.dest.exists() or self.dest.is_symlink():
            raise UsageError(f"{self.dest} already exists; a bag is never overwritten")
        parent = self.dest.parent
        if not parent.is_dir():
            raise UsageError(f"{parent}: no such directory")
        self.tmp = parent / f".{self.dest.name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(mode=0o755)
        self._dirs: set[Path] = {self.tmp}
        self._files: list[str] = []
        self._lock = threading.Lock()

    def _open(self, rel: str) -> int:
        if not bagfmt.safe_path(rel):
            raise UsageError(f"refusing unsafe bag path {rel!r}")
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        d = p.parent
        while d != self.tmp and d not in self._dirs:
            self._dirs.add(d)
            d = d.parent
        return os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)

    def write_stream(self, rel: str, chunks: Iterable[bytes]) -> Written:
        """Write ``chunks`` to ``rel`` (never held whole), fsync, return size and both digests."""
        h256, h512, n = hashlib.sha256(), hashlib.sha512(), 0
        fd = self._open(rel)
        try:
            for c in chunks:
                h256.update(c)
                h512.update(c)
                n += len(c)
                view = memoryview(c)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        # fsynced in commit(), all at once before the rename: a download never waits for the disk, and
        # writeback of earlier files overlaps later downloads (nothing is in place before that fsync).
        with self._lock:
            self._files.append(rel)
        return Written(rel, n, h256.hexdigest(), h512.hexdigest())

    def write_bytes(self, rel: str, data: bytes) -> Written:
        return self.write_stream(rel, [data])

    def discard(self, rel: str) -> None:
        (self.tmp / rel).unlink(missing_ok=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def commit(self, as_zip: bool = False) -> Path:
        """Fsync every file and directory, then rename the bag into place and fsync its parent; ``as_zip``:
        write the finished bag as the zip file ``dest`` instead (:mod:`.ziparchive`) and remove the directory."""
        for rel in self._files:
            fd = os.open(self.tmp / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for d in sorted(self._dirs, key=lambda p: -len(p.parts)):
            fsync_dir(d)
        if as_zip:
            from dockd.agency.disclosure import ziparchive

            ziparchive.write(self.tmp, self.dest)
            shutil.rmtree(self.tmp)
            return self.dest
        os.rename(self.tmp, self.dest)
        fsync_dir(self.dest.parent)
        return self.dest
