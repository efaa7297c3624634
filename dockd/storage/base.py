"""The interface between the uploader and a storage backend, and the bandwidth limiter.

Object names are decided in :mod:`dockd.core.naming`.

A backend stores a local file under a key and proves what it holds. It does
not decide policy (when to retry, quarantine or wipe): it raises
:class:`StoreFailure` with a classification and the uploader decides.

Every backend keeps these promises (``tests/contract/test_storage_contract.py`` runs
one suite against each):

* ``put_file``/``put_bytes`` never replace an existing object: if the key
  already holds exactly our bytes the call succeeds (idempotent re-put), if
  it holds anything else it raises ``StoreFailure(CONFLICT)`` and the
  existing object is left untouched;
* they return only after the storage proved it holds our size and SHA-256;
* ``find`` says whether the key is free, holds exactly our bytes, or holds
  something else (``CONFLICT``); ``head`` of a missing key is ``None``.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

# Object names live in the core (one home for every name); imported here for the backends' callers.
from dockd.core.naming import object_key as object_key
from dockd.core.naming import station_prefix as station_prefix

# The classification of a failure is a core outcome (the uploader's policy matches on it).
from dockd.core.outcomes import ErrorClass as ErrorClass


def b64(hexdigest: str) -> str:
    return base64.b64encode(bytes.fromhex(hexdigest)).decode("ascii")


class StoreFailure(Exception):
    def __init__(self, cls: ErrorClass, message: str, code: str = ""):
        super().__init__(message)
        self.cls, self.code = cls, code


@dataclass(frozen=True)
class RemoteObject:
    key: str
    size: int
    sha256: str | None  # hex of the full-object SHA-256 when the server reports it
    composite: str | None = None  # "base64-N" multipart composite checksum when that is what it reports
    version_id: str | None = None
    retain_until: datetime | None = None
    legal_hold: bool = False
    lock_mode: str | None = None  # "COMPLIANCE" / "GOVERNANCE" when the object is retained
    already_present: bool = False  # a put found exactly these bytes already stored (nothing was written)


class PartLedger(Protocol):
    """Where a multipart upload's progress is recorded (the queue), so a restart resumes it."""

    upload_id: str | None

    def begin(self, upload_id: str) -> None: ...
    def done_parts(self) -> dict[int, tuple[int, str, str]]: ...  # number -> (size, sha256_b64, etag)
    def record(self, number: int, size: int, sha256_b64: str, etag: str) -> None: ...
    def finish(self) -> None: ...


class Backend(Protocol):
    """Every method raises :class:`StoreFailure` (classified) when the storage fails it."""

    name: str
    # The station's shared bandwidth limit, given at construction (``open_backend(cfg, limiter=...)``).
    limiter: TokenBucket | None
    # True if a put can never replace an existing object (S3 If-None-Match: *,
    # link(2) on a share): the uploader may then skip the HEAD before a clip's
    # first upload, since a taken key is refused and then compared.
    conditional_writes: bool

    def multipart_for(self, size: int) -> bool:
        """True if an object of ``size`` bytes is stored by a (resumable) multipart upload."""

    def head(self, key: str) -> RemoteObject | None:
        """What the storage holds under ``key`` (None if nothing). Raises StoreFailure."""

    def find(self, key: str, size: int, sha256: str, path: Path | None = None) -> RemoteObject | None:
        """None if ``key`` is free; the object if it provably holds exactly these bytes;
        raise StoreFailure(CONFLICT) if it holds anything else. ``path`` (the local
        copy) lets a backend recompute a checksum it can only compare in another form."""

    def put_file(self, key: str, path: Path, size: int, sha256: str, ledger: PartLedger | None = None,
                 progress=None) -> RemoteObject:
        """Store the file; never overwrite a different object; return the verified remote object."""

    def put_bytes(self, key: str, data: bytes, sha256: str) -> RemoteObject: ...

    def read_sha256(self, key: str) -> tuple[str, int]:
        """Download and hash the object (deep verification)."""

    def check(self) -> None:
        """Raise StoreFailure if the storage is not reachable and writable."""

    def lock_enforced(self) -> bool:
        """True if the storage enforces Object Lock (WORM) for what we write."""

    def ensure_lock(self, obj: RemoteObject) -> RemoteObject:
        """Give ``obj`` (already stored) the configured retention and legal hold where the storage can hold
        them; return the object as it now is (unchanged where there is nothing to do)."""

    def abort(self, key: str, upload_id: str) -> None:
        """Abort the multipart upload ``upload_id`` of ``key``; one that is already gone is not an error."""

    def abort_unknown_uploads(self, known: set[str], prefix: str | None = None, key: str | None = None) -> list[str]:
        """Abort unfinished multipart uploads the queue does not know (no orphans)."""

    def delete(self, key: str) -> None:
        """Remove the object under ``key`` (for probes, never evidence); a missing key is not an error."""

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """Every object key under ``prefix`` (with ``start_after``: only keys sorting after it)."""

    def read_small(self, key: str, limit: int) -> bytes | None:
        """A small object's bytes, None if there is none; StoreFailure(PERMANENT) if bigger than ``limit``."""

    def iter_chunks(self, key: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes in chunks of at most ``chunk`` (bounded memory for any size); StoreFailure if
        it is missing (PERMANENT) or the read fails."""


class TokenBucket:
    """A shared bandwidth limit: ``rate`` bytes per second with bursts of up to ``burst`` bytes.

    Thread-safe; every upload thread charges the same bucket, so the limit is
    for the whole station. :meth:`take` debits at once (the balance may go
    negative) and sleeps until the debt is paid, so concurrent callers queue
    behind each other in order instead of all waking at once. ``clock`` and
    ``sleep`` are injectable so the arithmetic is tested without real time.
    """

    def __init__(self, rate: float, burst: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate / 4, 64 << 10))
        self.clock, self.sleep = clock, sleep
        self.tokens = self.burst
        self.last = clock()
        self.lock = threading.Lock()

    @classmethod
    def from_mbps(cls, mbps: float, **kw) -> TokenBucket:
        """``[upload] bandwidth_limit_mbps`` is in megabits per second (10^6 bit/s)."""
        return cls(mbps * 1_000_000 / 8, **kw)

    def reserve(self, n: int) -> float:
        """Debit ``n`` bytes; return how long the caller must wait before sending them."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
            self.last = now
            self.tokens -= n
            return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def take(self, n: int) -> None:
        wait = self.reserve(n)
        if wait > 0:
            self.sleep(wait)
