"""The interface between the uploader and a storage backend, and object naming.

A backend stores a local file under a key and proves what it holds. It does
not decide policy (when to retry, quarantine or wipe): it raises
:class:`StoreFailure` with a classification and the uploader decides.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol


def object_key(prefix: str, station: str, serial: str, mtime_ns: int, sha256: str, ext: str) -> str:
    """``{prefix}/{station}/{serial}/{YYYY}/{MM}/{DD}/{sha256}{ext}``, date from the clip's mtime in UTC."""
    d = datetime.fromtimestamp(mtime_ns / 1e9, UTC)
    parts = [prefix] if prefix else []
    parts += [station, serial, f"{d:%Y}", f"{d:%m}", f"{d:%d}", f"{sha256}{ext}"]
    return "/".join(parts)


def b64(hexdigest: str) -> str:
    return base64.b64encode(bytes.fromhex(hexdigest)).decode("ascii")


def unb64(value: str) -> str:
    return base64.b64decode(value).hex()


class ErrorClass(StrEnum):
    TRANSIENT = "transient"  # network, timeout, 5xx, throttling: retry with backoff
    PERMANENT = "permanent"  # credentials, permissions, missing bucket: fail with the reason
    CLOCK = "clock"  # RequestTimeTooSkewed: alarm, long backoff, no retry storm
    BAD_DIGEST = "bad_digest"  # server computed a different checksum from what we sent
    CONFLICT = "conflict"  # key exists with different content: quarantine, never overwrite


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


class PartLedger(Protocol):
    """Where a multipart upload's progress is recorded (the queue), so a restart resumes it."""

    upload_id: str | None

    def begin(self, upload_id: str) -> None: ...
    def done_parts(self) -> dict[int, tuple[int, str, str]]: ...  # number -> (size, sha256_b64, etag)
    def record(self, number: int, size: int, sha256_b64: str, etag: str) -> None: ...
    def finish(self) -> None: ...


class Backend(Protocol):
    name: str

    def head(self, key: str) -> RemoteObject | None:
        """What the storage holds under ``key`` (None if nothing). Raises StoreFailure."""

    def put_file(self, key: str, path: Path, size: int, sha256: str, ledger: PartLedger | None = None,
                 progress=None) -> RemoteObject:
        """Store the file; never overwrite a different object; return the verified remote object."""

    def put_bytes(self, key: str, data: bytes, sha256: str) -> RemoteObject: ...

    def read_sha256(self, key: str) -> tuple[str, int]:
        """Download and hash the object (deep verification)."""

    def check(self) -> None:
        """Raise StoreFailure if the storage is not reachable and writable."""
