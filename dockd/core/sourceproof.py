"""Proof that a clip's source on the camera was re-read and matched: the pure rules. No I/O.

With ``wipe_check = "hash"`` a clip is wiped only after its bytes on the camera were
read again and hashed to the SHA-256 recorded at offload. That re-read runs while
uploads run (the camera is idle then); what it found is a :class:`Proof`, committed to
the queue (``source_checks``, audit ``source.verified``) before anything relies on it.
At wipe time only the file's :class:`Identity` is looked at again (one ``lstat``), and
:func:`judge` says whether the proof still speaks for the file that would be deleted.

The identity is size, mtime, ctime, device and inode. ctime cannot be set from user
space: any write, truncate, rename over, or ``utime`` that puts an old mtime back moves
it, and a file recreated under the same path (even on a reused inode) has a new one. A
filesystem that renumbers inodes (FAT and exFAT may, when an inode leaves the cache or
on a new mount) only makes a proof look stale: the clip is then re-read, never wiped on
that proof.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class Identity:
    """What one ``lstat`` says about a file: enough to tell it changed since it was read."""

    size: int
    mtime_ns: int
    ctime_ns: int
    dev: int
    ino: int


@dataclass(frozen=True)
class Proof:
    """A recorded re-read: the file was ``identity`` before and after the read, and hashed to ``sha256``."""

    identity: Identity
    sha256: str
    verified_at: float


class Verdict(StrEnum):
    PROVEN = "proven"  # the proof speaks for the file now there, and it matched: may be wiped on it
    MISMATCH = "mismatch"  # the proof speaks for the file now there, and it did not match: refuse
    REREAD = "reread"  # no proof, or the file changed since (or is not the offloaded one): read it again


def judge(proof: Proof | None, now: Identity, *, size: int, mtime_ns: int, sha256: str, since: float) -> Verdict:
    """Whether ``proof`` (or None) still proves the file whose identity is ``now`` to be the clip
    offloaded as (``size``, ``mtime_ns``, ``sha256``).

    PROVEN only if the file is still the offloaded one (size, mtime), the proof was taken during
    the camera's current dock (``verified_at >= since``, the dock's time: between two docks the
    camera was out of our hands, and a FAT volume mounted again may hand out the same inode
    numbers), of exactly this file (every field of the identity equal), and the bytes then read matched.
    Anything else that is not a matched-but-different read of this very file is REREAD:
    a stale proof is never relied on.
    """
    if (now.size, now.mtime_ns) != (size, mtime_ns):
        return Verdict.REREAD  # not the offloaded file: the re-read refuses it with the reason
    if proof is None or proof.verified_at < since or proof.identity != now:
        return Verdict.REREAD
    return Verdict.PROVEN if proof.sha256 == sha256 else Verdict.MISMATCH
