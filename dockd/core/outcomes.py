"""Structured outcomes the adapters report and the policy acts on. No I/O.

Adapters translate foreign signals (exceptions of a storage library, what a
camera's directory tree looked like) into these values; the station's policy
matches on them, never on the wording of a message.

* :class:`ErrorClass`: how a storage failure is classified (the uploader's policy per class).
* :class:`AttemptError`: a failed upload attempt as stored in a clip's ``last_error``
  (``"{class}: {message}"``), written and read back only here, so the uploader can tell
  that the previous attempt failed with the same class (a repeated bad digest).
* :class:`SkipKind`: whether a skipped camera entry was skipped alone, or the scan
  stopped there (then the scan is incomplete: a clip not seen proves nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorClass(StrEnum):
    TRANSIENT = "transient"  # network, timeout, 5xx, throttling: retry with backoff
    PERMANENT = "permanent"  # credentials, permissions, missing bucket: fail with the reason
    CLOCK = "clock"  # RequestTimeTooSkewed: alarm, long backoff, no retry storm
    BAD_DIGEST = "bad_digest"  # server computed a different checksum from what we sent
    CONFLICT = "conflict"  # key exists with different content: quarantine, never overwrite


@dataclass(frozen=True)
class AttemptError:
    """A failed upload attempt: its class and message, as kept in the clip's ``last_error``."""

    cls: ErrorClass
    message: str

    def text(self) -> str:
        """The stored form, ``"{class}: {message}"`` (shown by ``dockd queue`` as ``last_error``)."""
        return f"{self.cls}: {self.message}"

    @classmethod
    def parse(cls, text: str | None) -> AttemptError | None:
        """The attempt error stored as ``text`` by :meth:`text`; None for any other ``last_error``
        (none, an interrupted upload, a corrupt staged copy, a refused wipe)."""
        if not text:
            return None
        head, sep, rest = text.partition(":")
        if not sep or head not in ErrorClass.__members__.values():
            return None
        return cls(ErrorClass(head), rest.removeprefix(" "))


class SkipKind(StrEnum):
    ENTRY = "entry"  # this entry alone was skipped; the rest of the scan is complete
    INCOMPLETE = "incomplete"  # the scan stopped here (too many entries): what was not seen proves nothing
